package synth

// The tokenizer of each family: which base it is cut from, its special tokens with
// their real contents, and its chat template. config.json and generation_config.json
// take their token ids from here, so the three files agree.

// qwenAdded are Qwen3's 26 added tokens in id order (<|endoftext|> first).
var qwenAdded = realTokens("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
	"<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
	"<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
	"<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
	"</tool_response>", "<think>", "</think>")

func realTokens(contents ...string) []addedTok {
	out := make([]addedTok, len(contents))
	for i, c := range contents {
		out[i] = addedTok{content: c, fromBase: true}
	}
	return out
}

func specialTokens(contents ...string) []addedTok {
	out := make([]addedTok, len(contents))
	for i, c := range contents {
		out[i] = addedTok{content: c, special: true}
	}
	return out
}

const (
	dsBOS = "<｜begin▁of▁sentence｜>"
	dsEOS = "<｜end▁of▁sentence｜>"
)

var tokSpecs = map[string]*tokSpec{
	// Qwen3-30B-A3B: no BOS; <|im_end|> ends a turn, <|endoftext|> a document.
	"qwen3_moe": {
		base: "qwen", tail: qwenAdded,
		eos: "<|im_end|>", pad: "<|endoftext|>", stops: []string{"<|im_end|>", "<|endoftext|>"},
		template: "file:qwen3.jinja",
		config: map[string]any{"add_bos_token": false, "add_prefix_space": false, "errors": "replace",
			"split_special_tokens": false, "tokenizer_class": "Qwen2Tokenizer",
			"additional_special_tokens": []string{"<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
				"<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
				"<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"}},
	},
	// Qwen1.5-MoE-A2.7B-Chat: the Qwen2 tokenizer (three added tokens) and ChatML.
	"qwen2_moe": {
		base: "qwen", tail: qwenAdded[:3],
		eos: "<|im_end|>", pad: "<|endoftext|>", stops: []string{"<|im_end|>", "<|endoftext|>"},
		template: qwen15Template,
		config: map[string]any{"add_prefix_space": false, "errors": "replace", "split_special_tokens": false,
			"tokenizer_class": "Qwen2Tokenizer", "additional_special_tokens": []string{"<|im_start|>", "<|im_end|>"}},
	},
	// OLMoE-1B-7B-0924-Instruct: GPT-NeoX-20B layout (|||IP_ADDRESS||| 0, <|padding|> 1,
	// <|endoftext|> after the merges). The byte-level merges are Qwen's.
	"olmoe": {
		base: "qwen",
		head: []addedTok{{content: "|||IP_ADDRESS|||", normalized: true}, {content: "<|padding|>", special: true}},
		tail: specialTokens("<|endoftext|>"),
		bos:  "<|endoftext|>", eos: "<|endoftext|>", pad: "<|padding|>", stops: []string{"<|endoftext|>"},
		template: tuluTemplate,
		config:   map[string]any{"add_bos_token": false, "add_eos_token": false, "tokenizer_class": "GPTNeoXTokenizer"},
	},
	// granite-3.1-*-instruct: <|end_of_text|> is id 0 and bos, eos and pad at once; the
	// role markers follow the merges. The byte-level merges are Qwen's.
	"granitemoe": {
		base: "qwen",
		head: specialTokens("<|end_of_text|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"),
		tail: specialTokens("<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>"),
		bos:  "<|end_of_text|>", eos: "<|end_of_text|>", pad: "<|end_of_text|>", unk: "<|end_of_text|>",
		stops: []string{"<|end_of_text|>"}, template: graniteTemplate,
		config: map[string]any{"add_bos_token": false, "add_prefix_space": false, "tokenizer_class": "GPT2Tokenizer"},
	},
	// DeepSeek-V3: BOS 0, EOS 1, pad 2 in the vocabulary, the chat and tool markers after it.
	"deepseek_v3": {
		base: "deepseek",
		head: realTokens(dsBOS, dsEOS, "<｜▁pad▁｜>"),
		tail: realTokens("<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<|EOT|>",
			"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
			"<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>"),
		bos: dsBOS, eos: dsEOS, pad: dsEOS, stops: []string{dsEOS}, objTokens: true,
		template: "file:deepseek_v3.jinja",
		config:   map[string]any{"add_bos_token": true, "add_eos_token": false, "legacy": true, "tokenizer_class": "LlamaTokenizerFast"},
	},
	// DeepSeek-V2-Lite-Chat: BOS/EOS after the merges (100000/100001 there); the
	// DeepSeek-V3 merges stand in for V2's own.
	"deepseek_v2": {
		base: "deepseek",
		tail: realTokens(dsBOS, dsEOS, "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<|EOT|>"),
		bos:  dsBOS, eos: dsEOS, pad: dsEOS, stops: []string{dsEOS}, objTokens: true,
		template: deepseekV2Template,
		config:   map[string]any{"add_bos_token": true, "add_eos_token": false, "legacy": true, "tokenizer_class": "LlamaTokenizerFast"},
	},
	// Mixtral-8x7B-Instruct-v0.1: SentencePiece layout <unk> 0, <s> 1, </s> 2, then the
	// 256 byte-fallback tokens and the pieces.
	"mixtral": {
		base: "sentencepiece",
		head: []addedTok{{content: "<unk>", special: true}, {content: "<s>", special: true}, {content: "</s>", special: true}},
		bos:  "<s>", eos: "</s>", unk: "<unk>", stops: []string{"</s>"},
		template: mixtralTemplate,
		config: map[string]any{"add_bos_token": true, "add_eos_token": false, "legacy": true, "spaces_between_special_tokens": false,
			"tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": false},
	},
}

// Chat templates of the families whose real template is not committed in
// model/chat/testdata. Written from the public tokenizer_config.json files; the
// Mixtral one is the original v0.1 template (quoted verbatim in several projects, e.g.
// llama.cpp's chat-template tests and ollama's converter), later replaced upstream by
// one that accepts a system message.
const (
	mixtralTemplate = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
		"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
		"{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
		"{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}" +
		"{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"

	// Qwen1.5-*-Chat (ChatML with a default system message).
	qwen15Template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
		"{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}" +
		"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" +
		"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

	// Tulu-style template of OLMoE-1B-7B-0924-Instruct (written from memory of the
	// published file: role markers are plain text, eos_token closes assistant turns).
	tuluTemplate = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}" +
		"{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}" +
		"{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}" +
		"{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}" +
		"{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}" +
		"{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"

	// The core of granite-3.1-*-instruct's template (role markers, <|end_of_text|> after
	// each turn); the real one also renders tools, documents and a dated default system
	// prompt, which a random-weight model does not need.
	graniteTemplate = "{%- for message in messages %}" +
		"{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}" +
		"{%- if loop.last and add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}" +
		"{%- endfor %}"

	// DeepSeek-V2-Lite-Chat: plain-text "User:"/"Assistant:" turns after the BOS.
	deepseekV2Template = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}" +
		"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}" +
		"{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}" +
		"{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}" +
		"{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
