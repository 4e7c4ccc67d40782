// Talks to a running `celine serve --model ...` with the official `openai` npm
// client: model list, chat and text completions, plain and streamed (SSE),
// n > 1, usage, errors. Usage: node openai_client.cjs BASE_URL API_KEY OPENAI_PKG_DIR
// Exits non-zero when a check fails.
"use strict";

const [baseURL, apiKey, pkgDir] = process.argv.slice(2);
const OpenAI = require(pkgDir).default || require(pkgDir);

let failed = 0;
function check(cond, what) {
  console.log((cond ? "  ok   " : "  FAIL ") + what);
  if (!cond) failed++;
}

async function main() {
  const client = new OpenAI({ baseURL: baseURL + "/v1", apiKey, maxRetries: 0, timeout: 60000 });

  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  check(ids.length === 1, "models.list() names the served model (" + ids + ")");
  const model = ids[0];

  const base = { model, messages: [{ role: "user", content: "Say something." }], max_tokens: 12, seed: 42,
                 temperature: 0.8, ignore_eos: true };
  const plain = await client.chat.completions.create(base);
  check(plain.object === "chat.completion" && plain.choices.length === 1, "chat completion");
  check(plain.choices[0].finish_reason === "length" && plain.usage.completion_tokens === 12,
        "max_tokens ends with finish_reason length and usage counts 12 tokens");

  const stream = await client.chat.completions.create({ ...base, stream: true, stream_options: { include_usage: true } });
  let text = "", finish = null, usage = null, chunks = 0, role = null;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check(chunks >= 3 && role === "assistant", "stream delivered " + chunks + " chunks with the assistant role");
  check(text === plain.choices[0].message.content, "streamed text equals the non-streamed text (same seed)");
  check(finish === "length" && usage && usage.completion_tokens === 12, "stream ends with finish_reason and usage");

  const multi = await client.chat.completions.create({ ...base, n: 3, max_tokens: 5 });
  check(multi.choices.length === 3 && multi.choices.map((c) => c.index).join() === "0,1,2", "n = 3 gives three choices");
  check(multi.usage.completion_tokens === 15, "usage sums the three samples");

  const ms = await client.chat.completions.create({ ...base, n: 2, max_tokens: 4, stream: true });
  const seen = new Map();
  for await (const chunk of ms) for (const c of chunk.choices) if (c.finish_reason) seen.set(c.index, c.finish_reason);
  check(seen.size === 2 && seen.get(0) === "length" && seen.get(1) === "length", "streamed n = 2 finishes both");

  const comp = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 6, seed: 1,
                                                 ignore_eos: true, stream: true });
  let ctext = "", cfinish = null;
  for await (const chunk of comp) for (const c of chunk.choices) { ctext += c.text; if (c.finish_reason) cfinish = c.finish_reason; }
  check(cfinish === "length", "streamed text completion");

  try {
    await client.chat.completions.create({ ...base, n: 100000 });
    check(false, "n too large is refused");
  } catch (e) {
    check(e.status === 400 && /'n' is 100000/.test(e.message), "n too large -> 400 (" + e.status + ")");
  }
  try {
    await client.chat.completions.create({ ...base, messages: [{ role: "wizard", content: "x" }] });
    check(false, "bad role is refused");
  } catch (e) {
    check(e.status === 400 && /role 'wizard'/.test(e.message), "bad role -> 400 with the reason");
  }
  const bad = new OpenAI({ baseURL: baseURL + "/v1", apiKey: "wrong", maxRetries: 0 });
  try {
    await bad.models.list();
    check(false, "a wrong key is refused");
  } catch (e) {
    check(e.status === 401, "a wrong key -> 401");
  }
}

main().then(
  () => {
    if (failed) {
      console.log(failed + " check(s) failed");
      process.exit(1);
    }
    console.log("all checks passed");
  },
  (e) => {
    console.log("  FAIL unexpected error: " + (e && e.stack ? e.stack : e));
    process.exit(1);
  }
);
