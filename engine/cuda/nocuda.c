/*
 * nocuda.c - cel_backend_cuda_create for builds without the CUDA toolkit.
 *
 * CMake compiles this file into cel_engine only when CUDA was not found (or
 * -DCELINE_CUDA=OFF), so the engine links the same way in every build and a
 * request for the CUDA backend fails with a message saying why.
 */
#include "../backend.h"

cel_status cel_backend_cuda_create(const cel_model *m, const cel_backend_params *p, cel_backend **out, cel_error *err)
{
    (void)m;
    (void)p;
    if (out) *out = NULL;
    return cel_error_set(err, CEL_ERR_UNSUPPORTED, "celine was built without CUDA (nvcc not found at configure time)");
}
