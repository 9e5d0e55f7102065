package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model/tokenizer"
)

func newTokenize(g *globals) *cobra.Command {
	var (
		modelSpec     string
		decode, specl bool
	)
	c := &cobra.Command{
		Use:   "tokenize",
		Short: "Tokenize lines of stdin with a model's tokenizer.json: one JSON id array per line (or --decode them back)",
		Example: `  echo 'Hello, world' | moemesh tokenize --model ./Qwen3-30B-A3B
  echo '[9707,11,1879]' | moemesh tokenize --model ./Qwen3-30B-A3B --decode`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelSpec == "" {
				return fmt.Errorf("--model is required (a directory holding tokenizer.json, or builtin:tiny)")
			}
			dir := modelSpec // a directory needs only the tokenizer files, not a checkpoint
			if strings.HasPrefix(modelSpec, "builtin:") {
				var err error
				if dir, _, err = resolveModel(modelSpec, g.logger()); err != nil {
					return err
				}
			}
			tok, err := tokenizer.Load(dir)
			if err != nil {
				return err
			}
			in := bufio.NewScanner(cmd.InOrStdin())
			in.Buffer(make([]byte, 1<<20), 64<<20)
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			for n := 1; in.Scan(); n++ {
				if decode {
					var ids []int32
					if err := json.Unmarshal(in.Bytes(), &ids); err != nil {
						return fmt.Errorf("line %d: not a JSON array of token ids: %w", n, err)
					}
					text, err := tok.Decode(ids, !specl)
					if err != nil {
						return fmt.Errorf("line %d: %w", n, err)
					}
					fmt.Fprintln(out, text)
					continue
				}
				ids, err := tok.Encode(in.Text(), specl)
				if err != nil {
					return fmt.Errorf("line %d: %w", n, err)
				}
				b, _ := json.Marshal(ids)
				out.Write(append(b, '\n'))
			}
			if err := in.Err(); err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&modelSpec, "model", os.Getenv("MOEMESH_MODEL"), "model directory holding tokenizer.json (env MOEMESH_MODEL)")
	f.BoolVar(&decode, "decode", false, "read JSON id arrays and print their text")
	f.BoolVar(&specl, "special", false, "encode: add the special tokens the tokenizer's post-processor adds (e.g. BOS); decode: keep special tokens")
	return c
}
