"""celine_reward - celine's verifiers in-process, for RL trainers.

Pure standard library: ctypes over the shared library libceline_verify.so
(the verifiers alone: libc + PCRE2). Grading runs in C; batch calls release
the GIL and can use several threads.

    from celine_reward import Verifier, trl_reward, reward_func

    v = Verifier(format="boxed")
    v.grade("... \\\\boxed{\\\\frac12}", "0.5")["correct"]          # True

    # TRL: GRPOTrainer(reward_funcs=[trl_reward], ...) with a dataset column
    # "reference" (or "answer" / "solution" / "ground_truth"), optional "task",
    # "choices".
    # OpenRLHF: --remote_rm_url pointing at a file that imports reward_func.

The library is found through $CELINE_VERIFY_LIB, else next to this file's
repository build folders (build*/), else the system's library path.
"""
import ctypes
import ctypes.util
import glob
import json
import os
import threading

__all__ = ["Verifier", "trl_reward", "make_trl_reward", "reward_func", "compute_score", "advantages", "load_library"]

_TASKS = {"auto": 0, "math": 1, "mcq": 2, "open": 3}
_TASK_NAMES = {v: k for k, v in _TASKS.items()}
_ADV = {"none": 0, "grpo": 1, "dr_grpo": 2, "rloo": 3}
_SOURCES = ["none", "boxed", "answer_phrase", "mcq_letter", "mcq_text", "last_number", "whole", "last_math"]
_FORMAT = {"none": 0, "boxed": 1, "answer": 2, "think": 4}
_EXTRACT_MAX = 512


class _Config(ctypes.Structure):
    _fields_ = [
        ("format", ctypes.c_uint32),
        ("format_either", ctypes.c_bool),
        ("reward_correct", ctypes.c_double),
        ("reward_correct_bad_format", ctypes.c_double),
        ("reward_wrong", ctypes.c_double),
        ("reward_wrong_good_format", ctypes.c_double),
        ("rel_tol", ctypes.c_double),
        ("abs_tol", ctypes.c_double),
        ("last_number_fallback", ctypes.c_bool),
        ("max_response_bytes", ctypes.c_size_t),
        ("max_answer_bytes", ctypes.c_size_t),
        ("max_depth", ctypes.c_uint32),
        ("work_budget", ctypes.c_uint64),
        ("seed", ctypes.c_uint64),
    ]


class _Item(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_char_p),
        ("task", ctypes.c_int),
        ("response", ctypes.c_char_p),
        ("response_len", ctypes.c_size_t),
        ("reference", ctypes.c_char_p),
        ("choices", ctypes.POINTER(ctypes.c_char_p)),
        ("n_choices", ctypes.c_size_t),
        ("group", ctypes.c_char_p),
    ]


class _Result(ctypes.Structure):
    _fields_ = [
        ("reward", ctypes.c_double),
        ("correct", ctypes.c_bool),
        ("format_ok", ctypes.c_bool),
        ("task", ctypes.c_int),
        ("has_extracted", ctypes.c_bool),
        ("extracted", ctypes.c_char * _EXTRACT_MAX),
        ("source", ctypes.c_int),
        ("extracted_offset", ctypes.c_size_t),
        ("reason", ctypes.c_char * 96),
        ("f1", ctypes.c_double),
        ("has_advantage", ctypes.c_bool),
        ("advantage", ctypes.c_double),
    ]


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("msg", ctypes.c_char * 512)]


_lib = None
_lib_lock = threading.Lock()


def _candidates():
    env = os.environ.get("CELINE_VERIFY_LIB")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    # newest first: several build folders may hold older copies
    found = glob.glob(os.path.join(root, "build*", "libceline_verify.so"))
    for p in sorted(found, key=lambda f: os.path.getmtime(f), reverse=True):
        yield p
    found = ctypes.util.find_library("celine_verify")
    if found:
        yield found


def load_library(path=None):
    """Loads (once) and returns the verifier library; checks the struct layouts."""
    global _lib
    with _lib_lock:
        if _lib is not None and path is None:
            return _lib
        errors = []
        for cand in [path] if path else _candidates():
            try:
                lib = ctypes.CDLL(cand)
            except OSError as e:
                errors.append("%s: %s" % (cand, e))
                continue
            if hasattr(lib, "cel_verify_struct_size"):
                break
            errors.append("%s: an older build without the verifier API" % cand)
        else:
            raise OSError("celine_reward: libceline_verify.so not found (set CELINE_VERIFY_LIB); tried: %s"
                          % ("; ".join(errors) or "nothing"))
        lib.cel_verify_config_default.argtypes = [ctypes.POINTER(_Config)]
        lib.cel_verify_config_default.restype = None
        lib.cel_verifier_create.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(ctypes.c_void_p),
                                            ctypes.POINTER(_Error)]
        lib.cel_verifier_create.restype = ctypes.c_int
        lib.cel_verifier_free.argtypes = [ctypes.c_void_p]
        lib.cel_verifier_free.restype = None
        lib.cel_verify_grade.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Item), ctypes.POINTER(_Result),
                                         ctypes.POINTER(_Error)]
        lib.cel_verify_grade.restype = ctypes.c_int
        lib.cel_verify_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Item), ctypes.c_size_t, ctypes.c_int,
                                         ctypes.c_bool, ctypes.c_int, ctypes.POINTER(_Result),
                                         ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(_Error)]
        lib.cel_verify_batch.restype = ctypes.c_int
        lib.cel_advantages.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_uint64),
                                       ctypes.c_size_t, ctypes.c_int, ctypes.c_bool,
                                       ctypes.POINTER(ctypes.c_double), ctypes.POINTER(_Error)]
        lib.cel_advantages.restype = ctypes.c_int
        lib.cel_verify_struct_size.argtypes = [ctypes.c_int]
        lib.cel_verify_struct_size.restype = ctypes.c_size_t
        for which, cls in enumerate((_Config, _Item, _Result)):
            if lib.cel_verify_struct_size(which) != ctypes.sizeof(cls):
                raise OSError("celine_reward: %s layout differs from the library (%d vs %d bytes): rebuild"
                              % (cls.__name__, lib.cel_verify_struct_size(which), ctypes.sizeof(cls)))
        if path is None:
            _lib = lib
        return lib


def _b(s):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return str(s).encode("utf-8", "surrogatepass")


def _format_flags(fmt):
    if isinstance(fmt, int):
        return fmt
    flags = 0
    for part in (fmt or "none").split(","):
        part = part.strip()
        if part not in _FORMAT:
            raise ValueError("format must be none, boxed, answer, think or a comma list, got %r" % fmt)
        flags |= _FORMAT[part]
    return flags


class Verifier:
    """A compiled grader. Thread-safe: share one across threads.

    Keyword options mirror cel_verify_config: format ("none" | "boxed" |
    "answer" | "think" | "think,boxed" ...), format_either, reward_correct,
    reward_correct_bad_format, reward_wrong, reward_wrong_good_format,
    rel_tol, abs_tol, last_number_fallback, max_response_bytes,
    max_answer_bytes, max_depth, work_budget, seed.
    """

    def __init__(self, lib=None, **options):
        self._lib = lib or load_library()
        cfg = _Config()
        self._lib.cel_verify_config_default(ctypes.byref(cfg))
        for k, v in options.items():
            if k == "format":
                v = _format_flags(v)
            if not hasattr(cfg, k) or k.startswith("_"):
                raise TypeError("unknown verifier option %r" % k)
            setattr(cfg, k, v)
        err = _Error()
        handle = ctypes.c_void_p()
        if self._lib.cel_verifier_create(ctypes.byref(cfg), ctypes.byref(handle), ctypes.byref(err)) != 0:
            raise ValueError("celine verifier: " + err.msg.decode("utf-8", "replace"))
        self._h = handle

    def close(self):
        if getattr(self, "_h", None):
            self._lib.cel_verifier_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _fill(item, keep, response, reference, task, choices, group, id_):
        if task not in _TASKS:
            raise ValueError("task must be one of %s, got %r" % (sorted(_TASKS), task))
        resp = _b(response if response is not None else "")
        ref = _b(reference if reference is not None else "")
        keep.extend([resp, ref])
        item.response = resp
        item.response_len = len(resp)
        item.reference = ref
        item.task = _TASKS[task]
        if choices:
            arr = (ctypes.c_char_p * len(choices))(*[_b(c) for c in choices])
            keep.append(arr)
            item.choices = arr
            item.n_choices = len(choices)
        if group is not None:
            g = _b(group)
            keep.append(g)
            item.group = g
        if id_ is not None:
            i = _b(id_)
            keep.append(i)
            item.id = i

    @staticmethod
    def _to_dict(r, advantage=True):
        d = {
            "reward": r.reward,
            "correct": bool(r.correct),
            "format_ok": bool(r.format_ok),
            "extracted": r.extracted.decode("utf-8", "replace") if r.has_extracted else None,
            "reason": r.reason.decode("utf-8", "replace"),
            "task": _TASK_NAMES.get(r.task, "auto"),
            "source": _SOURCES[r.source] if 0 <= r.source < len(_SOURCES) else "none",
            "f1": r.f1,
        }
        if advantage and r.has_advantage:
            d["advantage"] = r.advantage
        return d

    def grade(self, response, reference, task="auto", choices=None):
        """Grades one response; returns a dict (reward, correct, format_ok,
        extracted, reason, task, source, f1). Raises ValueError for an invalid
        item (e.g. an MCQ reference that is not a letter of the options)."""
        item, keep, res, err = _Item(), [], _Result(), _Error()
        self._fill(item, keep, response, reference, task, choices, None, None)
        if self._lib.cel_verify_grade(self._h, ctypes.byref(item), ctypes.byref(res), ctypes.byref(err)) != 0:
            raise ValueError("celine verifier: " + err.msg.decode("utf-8", "replace"))
        return self._to_dict(res, advantage=False)

    def grade_batch(self, items, advantage="none", whiten=False, threads=1):
        """Grades a list of dicts with keys response, reference and optional
        task, choices, group, id. Returns one dict per item, in order; with
        an advantage mode ("grpo", "dr_grpo", "rloo") items carry
        "advantage" (per group; items without a group are groups of one).
        Invalid items come back with reward 0 and reason "error: ..."."""
        n = len(items)
        if n == 0:
            return []
        if advantage not in _ADV:
            raise ValueError("advantage must be one of %s" % sorted(_ADV))
        arr = (_Item * n)()
        keep = []
        for i, it in enumerate(items):
            self._fill(arr[i], keep, it.get("response"), it.get("reference"), it.get("task", "auto"),
                       it.get("choices"), it.get("group"), it.get("id"))
        res = (_Result * n)()
        nerr = ctypes.c_size_t(0)
        err = _Error()
        rc = self._lib.cel_verify_batch(self._h, arr, n, _ADV[advantage], bool(whiten), int(threads), res,
                                        ctypes.byref(nerr), ctypes.byref(err))
        if rc != 0:
            raise RuntimeError("celine verifier: " + err.msg.decode("utf-8", "replace"))
        return [self._to_dict(res[i]) for i in range(n)]


def advantages(rewards, groups, mode="grpo", whiten=False):
    """Group advantages of a list of rewards (equal group keys = one group)."""
    lib = load_library()
    n = len(rewards)
    if n != len(groups):
        raise ValueError("rewards and groups differ in length")
    if mode not in _ADV:
        raise ValueError("mode must be one of %s" % sorted(_ADV))
    ids = {}
    r = (ctypes.c_double * max(n, 1))(*[float(x) for x in rewards])
    g = (ctypes.c_uint64 * max(n, 1))(*[ids.setdefault(k, len(ids)) for k in groups])
    out = (ctypes.c_double * max(n, 1))()
    err = _Error()
    if lib.cel_advantages(r, g, n, _ADV[mode], bool(whiten), out, ctypes.byref(err)) != 0:
        raise ValueError("celine advantages: " + err.msg.decode("utf-8", "replace"))
    return [out[i] for i in range(n)]


_REF_KEYS = ("reference", "answer", "solution", "ground_truth", "label", "labels")
_default = {}
_default_lock = threading.Lock()


def _shared_verifier(options):
    key = json.dumps(options, sort_keys=True)
    with _default_lock:
        v = _default.get(key)
        if v is None:
            v = _default[key] = Verifier(**options)
        return v


def _completion_text(c):
    # TRL passes strings, or for conversational data a list of messages
    if isinstance(c, str):
        return c
    if isinstance(c, (list, tuple)):
        parts = [m.get("content", "") if isinstance(m, dict) else str(m) for m in c]
        return "".join(p if isinstance(p, str) else str(p) for p in parts)
    if isinstance(c, dict):
        return str(c.get("content", ""))
    return "" if c is None else str(c)


def make_trl_reward(task="auto", threads=1, reference_key=None, **options):
    """Returns a TRL reward function f(prompts, completions, **columns) ->
    list[float]. The reference comes from the column named reference_key, or
    the first of reference / answer / solution / ground_truth / label; a
    "task" column overrides `task` per row; "choices" (or "options") gives MCQ
    option texts. Rows without a reference get None (TRL skips them)."""
    opts = dict(options)

    def celine_reward(prompts=None, completions=None, **columns):
        v = _shared_verifier(opts)
        completions = completions or []
        n = len(completions)
        refs = None
        keys = (reference_key,) if reference_key else _REF_KEYS
        for k in keys:
            if k in columns and columns[k] is not None:
                refs = columns[k]
                break
        if refs is None:
            raise KeyError("celine_reward: no reference column (looked for %s)" % ", ".join(keys))
        tasks = columns.get("task")
        choices = columns.get("choices", columns.get("options"))
        items, idx = [], []
        for i in range(n):
            ref = refs[i] if i < len(refs) else None
            if ref is None:
                continue
            items.append({
                "response": _completion_text(completions[i]),
                "reference": ref if isinstance(ref, str) else str(ref),
                "task": tasks[i] if tasks is not None and tasks[i] else task,
                "choices": list(choices[i]) if choices is not None and choices[i] else None,
            })
            idx.append(i)
        out = [None] * n
        for i, r in zip(idx, v.grade_batch(items, threads=threads)):
            out[i] = float(r["reward"])
        return out

    celine_reward.__name__ = "celine_reward"
    return celine_reward


trl_reward = make_trl_reward()


def _parse_label(label):
    """An OpenRLHF label: a plain reference string, or a dict / JSON object
    with reference (or answer), task and choices."""
    if isinstance(label, dict):
        d = label
    elif isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            d = json.loads(label)
        except ValueError:
            return {"reference": label}
    else:
        return {"reference": "" if label is None else str(label)}
    ref = next((d[k] for k in _REF_KEYS if k in d and d[k] is not None), "")
    return {"reference": ref if isinstance(ref, str) else str(ref), "task": d.get("task", "auto"),
            "choices": d.get("choices")}


def reward_func(queries, prompts, labels, **kwargs):
    """OpenRLHF's custom reward function: queries are prompt + response, so
    the response is what follows the prompt. Returns {"rewards", "scores",
    "extra_logs"} as lists (torch tensors when torch is importable)."""
    v = _shared_verifier({})
    items = []
    for q, p, lab in zip(queries, prompts, labels):
        resp = q[len(p):] if p and q.startswith(p) else q
        d = _parse_label(lab)
        d["response"] = resp
        items.append(d)
    res = v.grade_batch(items, threads=kwargs.get("threads", 1))
    rewards = [r["reward"] for r in res]
    logs = {"correct": [1.0 if r["correct"] else 0.0 for r in res],
            "format_ok": [1.0 if r["format_ok"] else 0.0 for r in res]}
    try:
        import torch  # optional: OpenRLHF runs with torch; tests need not
        return {"rewards": torch.tensor(rewards), "scores": torch.tensor(rewards),
                "extra_logs": {k: torch.tensor(x) for k, x in logs.items()}}
    except ImportError:
        return {"rewards": rewards, "scores": list(rewards), "extra_logs": logs}


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl's reward signature: returns a dict with "score" plus details."""
    v = _shared_verifier({})
    task = "auto"
    choices = None
    if isinstance(extra_info, dict):
        task = extra_info.get("task", "auto")
        choices = extra_info.get("choices")
    r = v.grade(solution_str, ground_truth if isinstance(ground_truth, str) else str(ground_truth), task, choices)
    return {"score": r["reward"], "correct": r["correct"], "format_ok": r["format_ok"], "reason": r["reason"],
            "extracted": r["extracted"]}
