// Package tokenizer implements the subset of the Hugging Face tokenizers
// serialisation (tokenizer.json) that moemesh's models use: byte-level BPE as
// shipped by Qwen3 and DeepSeek-V3 (NFC normaliser, Split pre-tokenisers with
// look-ahead regexes, ByteLevel), and the SentencePiece-converted variant used by
// Mixtral/Llama-2 (Prepend/Replace normalisers, Metaspace, byte_fallback,
// Replace/ByteFallback/Fuse/Strip decoders). It exists so the gateway can turn
// prompts into ids and stream ids back into text without cgo or Python.
//
// Parity target: ids identical to the JavaScript implementation of Hugging Face
// tokenizers (@lenml/tokenizers 3.7.2, i.e. transformers.js) on a committed corpus;
// see testdata/ and tools/goldens. Where that implementation and the Rust crate
// disagree the choice is documented at the place it is made.
//
// Invalid UTF-8 handed to Encode is first repaired the way a WHATWG TextDecoder
// (and Rust's String::from_utf8_lossy) does it: every maximal invalid subpart
// becomes one U+FFFD. Decoded text is repaired the same way, and the streaming
// Decoder holds back an incomplete trailing sequence until it completes, so it
// never emits broken UTF-8 across token boundaries.
package tokenizer
