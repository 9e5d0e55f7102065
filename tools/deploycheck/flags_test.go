package main

import (
	"strings"
	"testing"
)

// Excerpts of real cobra help, in the format `moemesh --help` prints.
const rootHelp = `An event-driven expert-serving mesh for Mixture-of-Experts models

Usage:
  moemesh [command]

Available Commands:
  expertd     Run an expert daemon: serve experts of a model on one or more cards
  nats        Run a NATS server (JetStream on) for a mesh, for users without one
  nats-config Write the nats-server authorization (a user per role) for an existing NATS cluster
  router      Run a router: the dense model and the generation service; experts come from the mesh

Flags:
  -h, --help                help for moemesh
      --log-level string    log level: debug, info, warn, error (env MOEMESH_LOG_LEVEL) (default "info")
  -v, --version             version for moemesh
`

const routerHelp = `Usage:
  moemesh router [flags]

Flags:
      --auth moemesh nats-config   authorization file written by ` + "`moemesh nats-config`" + `
      --controller              also run the placement controller (leader-elected)
      --hedge-factor float      adaptive hedging
      --metrics string          serve Prometheus /metrics on this address, e.g. :9101
      --min-replicas int        with --controller: the fewest cards every expert is on (default 1)
      --nats string             NATS server URL (env MOEMESH_NATS_URL) (default "nats://127.0.0.1:4222")

Global Flags:
      --log-level string    log level (default "info")
`

func TestParseHelp(t *testing.T) {
	_, cmds := parseHelp(rootHelp)
	if strings.Join(cmds, " ") != "expertd nats nats-config router" {
		t.Errorf("commands %q", cmds)
	}
	flags, _ := parseHelp(routerHelp)
	want := map[string]bool{"auth": true, "controller": false, "hedge-factor": true, "metrics": true, "min-replicas": true, "nats": true, "log-level": true}
	if len(flags) != len(want) {
		t.Errorf("flags %v, want %v", flags, want)
	}
	for f, v := range want {
		if got, ok := flags[f]; !ok || got != v {
			t.Errorf("flag %s: takes a value %v (known %v), want %v", f, got, ok, v)
		}
	}
}

func TestCheckFlags(t *testing.T) {
	routerFlags, _ := parseHelp(routerHelp)
	cli := CLI{"router": routerFlags}
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = no problem
	}{
		{"good", []string{"router", "--controller", "--min-replicas", "2", "--metrics=:9101", "--log-level", "debug"}, ""},
		{"bool with explicit value", []string{"router", "--controller=true"}, ""},
		{"unknown subcommand", []string{"ruoter", "--controller"}, `no subcommand "ruoter"`},
		{"unknown flag", []string{"router", "--controler"}, "--controler: moemesh router has no such flag"},
		{"unknown flag with a value is one problem", []string{"router", "--replicas", "2"}, "--replicas: moemesh router has no such flag"},
		{"missing value at the end", []string{"router", "--metrics"}, "--metrics: moemesh router wants a value"},
		{"missing value before a flag", []string{"router", "--min-replicas", "--controller"}, "--min-replicas: moemesh router wants a value"},
		{"positional", []string{"router", "--controller", "extra"}, "takes no arguments"},
		{"no subcommand", nil, "no moemesh subcommand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := checkFlags(cli, []Invocation{{Where: "test", Args: tc.args}})
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("problems %v, want none", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("problems %v, want exactly one containing %q", errs, tc.want)
			}
		})
	}
}

func TestArgValue(t *testing.T) {
	args := []string{"router", "--controller", "--min-replicas", "2", "--nats=nats://a:1", "--metrics", ":1", "--metrics", ":2"}
	for _, tc := range []struct {
		name, want string
		found      bool
	}{
		{"controller", "", true},
		{"min-replicas", "2", true},
		{"nats", "nats://a:1", true},
		{"metrics", ":2", true}, // the last one wins, as in pflag
		{"id", "", false},
	} {
		if v, ok := argValue(args, tc.name); v != tc.want || ok != tc.found {
			t.Errorf("argValue(%s) = %q, %v; want %q, %v", tc.name, v, ok, tc.want, tc.found)
		}
	}
}
