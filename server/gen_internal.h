/*
 * gen_internal.h - what the generation routes (routes_gen.c: one-shot
 * generation, the routes' setup) and the jobs API (routes_jobs.c) share.
 */
#ifndef CEL_SERVER_GEN_INTERNAL_H
#define CEL_SERVER_GEN_INTERNAL_H

#include "celine/job.h"
#include "internal.h"

/* The jobs registry (routes_jobs.c), owned by the generation routes. */
typedef struct cel__jobs cel__jobs;
cel_status cel__jobs_create(cel_server *s, const char *templates_dir, cel__jobs **out, cel_error *err);
void cel__jobs_stop(cel__jobs *j);
void cel__jobs_free(cel__jobs *j);

/* A path a request names, resolved inside the server's data folder (ud: the
 * cel_server); the cel_job_env resolve hook. */
cel_status cel__srv_gen_resolve(void *ud, const char *in, bool for_output, char *out, size_t cap, cel_error *err);
/* Whether spec's "backend" is the server's own engine (*local), and when it
 * is not, that every URL is under the operator's --allow-backends prefixes. */
cel_status cel__srv_gen_backend_check(const cel_server *s, const cel_job_spec *spec, bool *local, cel_error *err);

#endif
