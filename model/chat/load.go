package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names in an HF model directory.
const (
	TemplateFile         = "chat_template.jinja"
	TokenizerConfigFile  = "tokenizer_config.json"
	GenerationConfigFile = "generation_config.json"
	ModelConfigFile      = "config.json"
)

// Load reads the chat template of the HF model in dir: chat_template.jinja if
// present (newer repos), else tokenizer_config.json's chat_template; the
// bos/eos tokens from tokenizer_config.json; and StopIDs from the eos_token_id
// of generation_config.json and config.json. Errors name the file and what is
// wrong with it.
func Load(dir string) (*Template, error) {
	var cfg tokenizerConfig
	cfgPath := filepath.Join(dir, TokenizerConfigFile)
	cfgData, err := os.ReadFile(cfgPath)
	haveCfg := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chat: %w", err)
	}
	if haveCfg {
		if cfg, err = parseTokenizerConfig(cfgPath, cfgData); err != nil {
			return nil, err
		}
	}

	var src, origin string
	jinjaPath := filepath.Join(dir, TemplateFile)
	switch data, err := os.ReadFile(jinjaPath); {
	case err == nil:
		src, origin = string(data), jinjaPath
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("chat: %w", err)
	case !cfg.hasTemplate && modelType(dir) == "deepseek_v4":
		// V4 ships encoding_dsv4.py instead of a Jinja template; EncodeDSV4 is its port.
		return withStopIDs(dir, &Template{Origin: "encoding_dsv4 (built in)", BOS: DSV4BOS, EOS: DSV4EOS, native: renderDSV4})
	case !haveCfg:
		return nil, fmt.Errorf("chat: %s: no %s or %s in the model directory", dir, TemplateFile, TokenizerConfigFile)
	case !cfg.hasTemplate:
		return nil, fmt.Errorf("chat: %s: no chat_template key (and no %s next to it)", cfgPath, TemplateFile)
	default:
		src, origin = cfg.template, cfgPath
	}

	t, err := parse(origin, src, cfg.bos, cfg.eos)
	if err != nil {
		return nil, err
	}
	return withStopIDs(dir, t)
}

// withStopIDs adds the eos ids of dir's generation_config.json and config.json to t.
func withStopIDs(dir string, t *Template) (*Template, error) {
	// generation_config.json is what generate() stops on, so it goes first;
	// config.json may name further ids (older repos only have it there).
	for _, name := range []string{GenerationConfigFile, ModelConfigFile} {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
		ids, err := parseStopIDs(p, data)
		if err != nil {
			return nil, err
		}
		t.StopIDs = appendUnique(t.StopIDs, ids...)
	}
	return t, nil
}

type tokenizerConfig struct {
	template    string
	hasTemplate bool
	bos, eos    string
}

// parseTokenizerConfig extracts chat_template, bos_token and eos_token.
// path is only used in error messages.
func parseTokenizerConfig(path string, data []byte) (tokenizerConfig, error) {
	var c tokenizerConfig
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return c, fmt.Errorf("chat: %s: invalid JSON: %w", path, err)
	}
	if raw == nil {
		return c, fmt.Errorf("chat: %s: expected a JSON object", path)
	}
	var err error
	if c.bos, err = parseToken(path, "bos_token", raw["bos_token"]); err != nil {
		return c, err
	}
	if c.eos, err = parseToken(path, "eos_token", raw["eos_token"]); err != nil {
		return c, err
	}
	if ct, ok := raw["chat_template"]; ok && !isNull(ct) {
		if c.template, err = parseChatTemplate(path, ct); err != nil {
			return c, err
		}
		c.hasTemplate = true
	}
	return c, nil
}

// parseChatTemplate accepts a string or the list form
// [{"name": ..., "template": ...}] and picks "default" from the list, as
// transformers does when no template name is asked for.
func parseChatTemplate(path string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     *string `json:"name"`
		Template *string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("chat: %s: chat_template: expected a string or a list of {name, template}, got %s", path, kindOf(raw))
	}
	var names []string
	for i, e := range list {
		if e.Name == nil || e.Template == nil {
			return "", fmt.Errorf("chat: %s: chat_template[%d]: needs string fields name and template", path, i)
		}
		if *e.Name == "default" {
			return *e.Template, nil
		}
		names = append(names, *e.Name)
	}
	sort.Strings(names)
	return "", fmt.Errorf("chat: %s: chat_template: no template named \"default\" (have %q)", path, names)
}

// parseToken reads a special token written as a string, null, or an
// AddedToken object {"__type": "AddedToken", "content": ...}.
func parseToken(path, key string, raw json.RawMessage) (string, error) {
	if raw == nil || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("chat: %s: %s: expected a string or an AddedToken object with string \"content\", got %s", path, key, kindOf(raw))
	}
	return *obj.Content, nil
}

// parseStopIDs reads eos_token_id (absent, null, an int, or a list of ints)
// from a generation_config.json or config.json.
func parseStopIDs(path string, data []byte) ([]int32, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("chat: %s: invalid JSON: %w", path, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("chat: %s: expected a JSON object", path)
	}
	v, ok := raw["eos_token_id"]
	if !ok || isNull(v) {
		return nil, nil
	}
	elems := []json.RawMessage{v}
	if bytes.HasPrefix(bytes.TrimSpace(v), []byte("[")) {
		elems = nil
		if err := json.Unmarshal(v, &elems); err != nil {
			return nil, fmt.Errorf("chat: %s: eos_token_id: expected an integer or a list of integers: %v", path, err)
		}
	}
	nums := make([]json.Number, 0, len(elems))
	for _, e := range elems {
		var n json.Number
		// json.Number would also accept a quoted "5"; an id written as a
		// string is a broken config, not something to guess about.
		if kindOf(e) != "a number" || decodeNumber(e, &n) != nil {
			return nil, fmt.Errorf("chat: %s: eos_token_id: expected an integer or a list of integers, found %s", path, kindOf(e))
		}
		nums = append(nums, n)
	}
	ids := make([]int32, 0, len(nums))
	for _, n := range nums {
		i, err := n.Int64()
		if err != nil || i < 0 || i > math.MaxInt32 {
			return nil, fmt.Errorf("chat: %s: eos_token_id: %s is not a token id (non-negative int32)", path, n)
		}
		ids = appendUnique(ids, int32(i))
	}
	return ids, nil
}

// decodeNumber decodes with UseNumber so ids beyond float64 precision and
// fractions ("1.5") are rejected by Int64 rather than rounded.
func decodeNumber(raw json.RawMessage, dst *json.Number) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(dst)
}

func appendUnique(dst []int32, ids ...int32) []int32 {
next:
	for _, id := range ids {
		for _, have := range dst {
			if have == id {
				continue next
			}
		}
		dst = append(dst, id)
	}
	return dst
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// kindOf names the JSON type of raw for error messages.
func kindOf(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "":
		return "nothing"
	case s == "null":
		return "null"
	case s == "true" || s == "false":
		return "a boolean"
	case s[0] == '"':
		return "a string"
	case s[0] == '[':
		return "a list"
	case s[0] == '{':
		return "an object"
	default:
		return "a number"
	}
}

// modelType is config.json's model_type in dir, or "" when it cannot be read.
func modelType(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, ModelConfigFile))
	if err != nil {
		return ""
	}
	var c struct {
		ModelType string `json:"model_type"`
	}
	if json.Unmarshal(data, &c) != nil {
		return ""
	}
	return c.ModelType
}
