// Package chat turns a conversation into the prompt text a model was trained
// on, by rendering the model's Hugging Face chat template (the Jinja source in
// tokenizer_config.json's chat_template or a chat_template.jinja file).
//
// Rendering goes through github.com/ardanlabs/jinja, a pure-Go engine written
// for HF templates, configured to match what transformers does with Python
// Jinja2 (trim_blocks, lstrip_blocks, raise_exception, strftime_now): the
// prompt must be byte-identical to the one the model saw in training, because
// any difference changes tokenisation. testdata/goldens.json pins that against
// Python Jinja2 for the real Qwen3 and DeepSeek-V3 templates; regenerate it
// with `make chat-goldens` (python3 tools/chatgoldens/gen.py).
//
// Load also collects the stop token ids (eos_token_id of generation_config.json
// and config.json), since they come from the same model directory and the
// sampler needs them alongside the prompt.
//
// Known gaps of the engine that these two templates do not reach (so the
// goldens cannot catch them) are listed on Template.Render.
//
// The package imports only the standard library and ardanlabs/jinja, so it
// can sit under any service without pulling the mesh in.
package chat
