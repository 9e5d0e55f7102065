package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"
)

// CLI is what the files may use of the moemesh command line: per subcommand, its flags
// and whether each takes a value.
type CLI map[string]map[string]bool

// flagLine matches a flag in cobra's help: "  -h, --help", "      --cards string   ...";
// what stands between the name and the description column (two or more spaces) names the
// value: a type, or a word the usage back-quotes (pflag's UnquoteUsage: "--auth moemesh
// nats-config"). Bool flags have none.
var flagLine = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)( \S.*?)?(?:\s{2,}|$)`)

// commandLine matches a subcommand under "Available Commands:".
var commandLine = regexp.MustCompile(`^\s+([a-z][a-z0-9-]*)\s+\S`)

// parseHelp reads cobra's help: the flags (with whether they take a value) and, when
// present, the subcommands.
func parseHelp(help string) (flags map[string]bool, commands []string) {
	flags = map[string]bool{}
	inCommands := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasSuffix(line, "Commands:"):
			inCommands = true
			continue
		case strings.TrimSpace(line) == "" || !strings.HasPrefix(line, " "):
			inCommands = false
		}
		if inCommands {
			if m := commandLine.FindStringSubmatch(line); m != nil {
				commands = append(commands, m[1])
			}
			continue
		}
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags[m[1]] = m[2] != ""
		}
	}
	return flags, commands
}

// helpCLI runs `bin --help` and `bin <cmd> --help` for the subcommands the files use.
func helpCLI(ctx context.Context, bin string, used []string) (CLI, error) {
	run := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, bin, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	root, err := run("--help")
	if err != nil {
		return nil, err
	}
	_, commands := parseHelp(root)
	if len(commands) == 0 {
		return nil, errors.New("moemesh --help lists no commands (has cobra's help format changed?)")
	}
	cli := CLI{}
	for _, c := range used {
		if _, done := cli[c]; done || !slices.Contains(commands, c) {
			continue // an unknown subcommand is reported by checkFlags
		}
		help, err := run(c, "--help")
		if err != nil {
			return nil, err
		}
		flags, _ := parseHelp(help)
		if len(flags) == 0 {
			return nil, fmt.Errorf("moemesh %s --help lists no flags", c)
		}
		cli[c] = flags
	}
	return cli, nil
}

// Invocation is one moemesh command line found in a deployment file.
type Invocation struct {
	Where string   // e.g. "compose.yaml service router-1"
	Args  []string // the subcommand first
}

// Flag is one flag of an invocation.
type Flag struct {
	Name, Value string
	HasValue    bool
}

// Flags splits args[1:] into flags: "--name=value", "--name value" (when the CLI says
// the flag takes a value) and "--name". Positional arguments are returned apart.
func (c CLI) Flags(cmd string, args []string) (flags []Flag, positional []string, errs []error) {
	known := c[cmd]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			positional = append(positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		takes, ok := known[name]
		if !ok {
			errs = append(errs, fmt.Errorf("--%s: moemesh %s has no such flag", name, cmd))
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
				i++ // its value, most likely; not a positional argument to report too
			}
			continue
		}
		if takes && !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				errs = append(errs, fmt.Errorf("--%s: moemesh %s wants a value for it", name, cmd))
				continue
			}
			i++
			value, hasValue = args[i], true
		}
		flags = append(flags, Flag{Name: name, Value: value, HasValue: hasValue})
	}
	return flags, positional, errs
}

// checkFlags reports every invocation of an unknown subcommand, an unknown flag, a flag
// missing its value, and positional arguments (no service subcommand takes any).
func checkFlags(cli CLI, invs []Invocation) []error {
	var errs []error
	for _, inv := range invs {
		if len(inv.Args) == 0 {
			errs = append(errs, fmt.Errorf("%s: no moemesh subcommand", inv.Where))
			continue
		}
		cmd := inv.Args[0]
		if _, ok := cli[cmd]; !ok {
			errs = append(errs, fmt.Errorf("%s: moemesh has no subcommand %q", inv.Where, cmd))
			continue
		}
		_, pos, ferrs := cli.Flags(cmd, inv.Args[1:])
		for _, e := range ferrs {
			errs = append(errs, fmt.Errorf("%s: %w", inv.Where, e))
		}
		if len(pos) > 0 {
			errs = append(errs, fmt.Errorf("%s: moemesh %s takes no arguments, got %q", inv.Where, cmd, pos))
		}
	}
	return errs
}

// argValue is the value of the last --name in args ("--name=v" or "--name v"), and
// whether it is there. It serves the topology checks, which run whether or not the flags
// check passed, so it does not need the CLI: a value-less flag reads as "".
func argValue(args []string, name string) (string, bool) {
	var v string
	found := false
	for i, a := range args {
		if a == "--"+name {
			found, v = true, ""
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
				v = args[i+1]
			}
		} else if val, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			found, v = true, val
		}
	}
	return v, found
}
