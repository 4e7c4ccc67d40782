"""The ctypes bindings (python/celine_reward.py): grading, batches with
advantages, the TRL / OpenRLHF / verl entry points, threads, errors.
Standard library only (unittest)."""
import math
import os
import sys
import threading
import unittest



def _preload_sanitizer_runtime():
    """A library built with -DCELINE_SANITIZE=ON needs the ASan runtime loaded
    first: re-run this test with it in LD_PRELOAD (leak checks off: the
    interpreter itself is not leak-clean)."""
    lib = os.environ.get("CELINE_VERIFY_LIB")
    if not lib or os.environ.get("CELINE_TEST_PRELOADED"):
        return
    try:
        import subprocess
        out = subprocess.run(["ldd", lib], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return
    libs = [line.split("=>")[1].split("(")[0].strip() for line in out.splitlines()
            if "=>" in line and ("libasan" in line or "libubsan" in line)]
    if not libs:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(libs + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    env["CELINE_TEST_PRELOADED"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


_preload_sanitizer_runtime()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import celine_reward as cr  # noqa: E402


class TestGrade(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.v = cr.Verifier()

    def test_math(self):
        r = self.v.grade("so \\boxed{\\frac{1}{2}}", "0.5", "math")
        self.assertTrue(r["correct"])
        self.assertEqual(r["reward"], 1.0)
        self.assertEqual(r["extracted"], "\\frac{1}{2}")
        self.assertEqual(r["source"], "boxed")
        self.assertEqual(r["task"], "math")
        self.assertFalse(self.v.grade("\\boxed{(1,2)}", "[1,2]", "math")["correct"])
        self.assertTrue(self.v.grade("\\boxed{x^2-1}", "(x-1)(x+1)", "math")["correct"])

    def test_mcq_and_open(self):
        r = self.v.grade("A looks fine but the answer is (C).", "C", "mcq")
        self.assertTrue(r["correct"])
        r = self.v.grade("The answer is A or B", "A", "mcq")
        self.assertEqual(r["reason"], "hedged")
        r = self.v.grade("The answer is Paris", "B", "mcq", choices=["Rome", "Paris", "Oslo"])
        self.assertTrue(r["correct"])
        self.assertEqual(r["source"], "mcq_text")
        r = self.v.grade("Answer: Washington", "George Washington", "open")
        self.assertFalse(r["correct"])
        self.assertAlmostEqual(r["f1"], 2 / 3)
        r = self.v.grade("Answer: café", "Cafe")
        self.assertTrue(r["correct"])
        self.assertEqual(r["task"], "open")

    def test_unicode_and_nul(self):
        r = self.v.grade("Answer: π", "\\pi", "math")
        self.assertTrue(r["correct"])
        r = self.v.grade("x\x00\\boxed{3}", "3", "math")  # embedded NUL: the full length is graded
        self.assertTrue(r["correct"])

    def test_invalid_item(self):
        with self.assertRaises(ValueError):
            self.v.grade("Answer: A", "Z", "mcq", choices=["x", "y"])
        with self.assertRaises(ValueError):
            self.v.grade("x", "y", "chemistry")
        with self.assertRaises(TypeError):
            cr.Verifier(no_such_option=1)
        with self.assertRaises(ValueError):
            cr.Verifier(format="fancy")
        with self.assertRaises(ValueError):
            cr.Verifier(max_depth=0)

    def test_format_and_partial_credit(self):
        v = cr.Verifier(format="think,boxed", reward_correct_bad_format=0.2)
        self.assertEqual(v.grade("<think>x</think>\\boxed{4}", "4", "math")["reward"], 1.0)
        r = v.grade("The answer is 4", "4", "math")
        self.assertTrue(r["correct"])
        self.assertFalse(r["format_ok"])
        self.assertAlmostEqual(r["reward"], 0.2)
        v.close()
        v.close()  # idempotent


class TestBatch(unittest.TestCase):
    def test_batch_grpo(self):
        v = cr.Verifier()
        items = [{"response": "\\boxed{%d}" % x, "reference": "4", "task": "math", "group": "g"} for x in (4, 5, 4, 4)]
        items.append({"response": "Answer: C", "reference": "C", "task": "mcq"})
        items.append({"response": "x", "reference": None, "task": "mcq", "group": "h"})  # invalid: error record
        res = v.grade_batch(items, advantage="grpo", threads=2)
        self.assertEqual([r["correct"] for r in res[:5]], [True, False, True, True, True])
        rs = [1, 0, 1, 1]
        m = sum(rs) / 4
        sd = math.sqrt(sum((x - m) ** 2 for x in rs) / 3)
        for r, x in zip(res[:4], rs):
            self.assertAlmostEqual(r["advantage"], (x - m) / (sd + 1e-6), places=9)
        self.assertEqual(res[4]["advantage"], 0.0)
        self.assertTrue(res[5]["reason"].startswith("error"))
        self.assertEqual(v.grade_batch([]), [])
        with self.assertRaises(ValueError):
            v.grade_batch(items, advantage="ppo")

    def test_advantages(self):
        a = cr.advantages([1, 0, 1, 0, 1], ["a", "a", "b", "b", "c"], mode="rloo")
        self.assertEqual(a, [1.0, -1.0, 1.0, -1.0, 0.0])
        a = cr.advantages([1, 0], ["a", "a"], mode="dr_grpo")
        self.assertEqual(a, [0.5, -0.5])

    def test_threads_share_one_verifier(self):
        v = cr.Verifier()
        bad = []

        def work():
            for _ in range(200):
                if not v.grade("\\boxed{\\sqrt{8}}", "2\\sqrt2", "math")["correct"]:
                    bad.append(1)
                if v.grade("The answer is (B)", "C", "mcq")["correct"]:
                    bad.append(1)

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(bad, [])


class TestTrainerAdapters(unittest.TestCase):
    def test_trl_signature(self):
        prompts = ["What is 2+2?", "Capital of France?", "Pick"]
        completions = ["... \\boxed{4}", [{"role": "assistant", "content": "Answer: Paris"}], "The answer is (B)"]
        out = cr.trl_reward(prompts=prompts, completions=completions, answer=["4", "Paris", "B"],
                            task=["math", "open", "mcq"])
        self.assertEqual(out, [1.0, 1.0, 1.0])
        out = cr.trl_reward(prompts, ["\\boxed{5}", "Rome", "(A)"], solution=["4", "Paris", None])
        self.assertEqual(out, [0.0, 0.0, None])
        self.assertEqual(cr.trl_reward.__name__, "celine_reward")
        with self.assertRaises(KeyError):
            cr.trl_reward(prompts, completions)
        f = cr.make_trl_reward(task="mcq", format="boxed")
        self.assertEqual(f(["q"], ["\\boxed{C}"], reference=["C"]), [1.0])
        self.assertEqual(f(["q"], ["Answer: C"], reference=["C"]), [0.0])
        f = cr.make_trl_reward(reference_key="gold")
        self.assertEqual(f(["q"], ["The answer is B"], gold=["B"], choices=[["x", "y", "z"]]), [1.0])

    def test_openrlhf(self):
        prompts = ["Q1: 3*3?", "Q2: pick"]
        queries = [prompts[0] + " It is \\boxed{9}", prompts[1] + " Answer: Oslo"]
        labels = ["9", '{"reference": "C", "task": "mcq", "choices": ["Rome", "Paris", "Oslo"]}']
        out = cr.reward_func(queries, prompts, labels)
        rewards = out["rewards"]
        rewards = rewards.tolist() if hasattr(rewards, "tolist") else rewards
        self.assertEqual(rewards, [1.0, 1.0])
        self.assertIn("extra_logs", out)

    def test_verl(self):
        s = cr.compute_score("gsm8k", "#### the answer is 18", "18")
        self.assertEqual(s["score"], 1.0)
        s = cr.compute_score("mmlu", "Answer: B", "C", {"task": "mcq"})
        self.assertEqual(s["score"], 0.0)


if __name__ == "__main__":
    unittest.main(verbosity=1)
