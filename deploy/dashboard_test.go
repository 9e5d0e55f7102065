package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"` // a string, or {"query": "..."}
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // a collapsed row's panels
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// metricRef matches the moemesh metric names in a PromQL expression.
var metricRef = regexp.MustCompile(`\bmoemesh_[a-z0-9_]*[a-z0-9]\b`)

// histogramSeries are the series a histogram named h exports besides h itself.
var histogramSeries = []string{"_bucket", "_sum", "_count"}

// unknownMetrics returns the moemesh metric names expr uses that are not in known (a
// histogram's _bucket, _sum and _count series count as its name; the test cannot tell a
// counter from a histogram by name), and whether expr names a
// moemesh metric at all.
func unknownMetrics(expr string, known map[string]bool) (unknown []string, named bool) {
	for _, m := range metricRef.FindAllString(expr, -1) {
		named = true
		if known[m] {
			continue
		}
		base := m
		for _, s := range histogramSeries {
			if b, ok := strings.CutSuffix(m, s); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			unknown = append(unknown, m)
		}
	}
	return unknown, named
}

// exportedMetrics reads the metric names the services define from their Go source: every
// string literal "moemesh_..." that is a whole name, and, where a file builds names from a
// literal prefix ("moemesh_router_" + name), that prefix joined with each snake_case
// literal of the same file. The second is a superset of the real names, which is enough to
// catch a dashboard naming a metric no code defines.
func exportedMetrics(t *testing.T, root string, dirs ...string) map[string]bool {
	t.Helper()
	name := regexp.MustCompile(`^moemesh_[a-z0-9_]*[a-z0-9]$`)
	prefix := regexp.MustCompile(`^moemesh_[a-z0-9_]+_$`)
	word := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	known := map[string]bool{}
	fset := token.NewFileSet()
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			var prefixes, words []string
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				switch {
				case name.MatchString(s):
					known[s] = true
				case prefix.MatchString(s):
					prefixes = append(prefixes, s)
				case word.MatchString(s):
					words = append(words, s)
				}
				return true
			})
			for _, p := range prefixes {
				for _, w := range words {
					known[p+w] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("reading %s: %v", d, err)
		}
	}
	return known
}

func TestUnknownMetrics(t *testing.T) {
	known := map[string]bool{"moemesh_a_total": true, "moemesh_lat_seconds": true}
	for _, tc := range []struct {
		expr    string
		unknown []string
		named   bool
	}{
		{`sum(rate(moemesh_a_total[5m]))`, nil, true},
		{`histogram_quantile(0.9, sum by (le) (rate(moemesh_lat_seconds_bucket[5m])))`, nil, true},
		{`moemesh_lat_seconds_sum / moemesh_lat_seconds_count`, nil, true},
		{`rate(moemesh_a_totl[5m])`, []string{"moemesh_a_totl"}, true},
		{`rate(http_requests_total[5m])`, nil, false},
	} {
		got, named := unknownMetrics(tc.expr, known)
		if !slices.Equal(got, tc.unknown) || named != tc.named {
			t.Errorf("%s: unknown %v named %v, want %v %v", tc.expr, got, named, tc.unknown, tc.named)
		}
	}
}

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("grafana", "moemesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana/moemesh.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatalf("dashboard without uid or title: %q %q", d.UID, d.Title)
	}
	known := exportedMetrics(t, "..", "gateway", "router", "expertd", "mesh", "cmd", "internal")
	for _, m := range []string{"moemesh_gateway_requests_total", "moemesh_router_expert_tokens_total", "moemesh_expertd_queue_batches"} {
		if !known[m] { // the source scan itself works
			t.Fatalf("the scan of the services' source missed %s (found %d names)", m, len(known))
		}
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		unknown, named := unknownMetrics(expr, known)
		if !named {
			t.Errorf("%s: expression names no moemesh metric: %s", where, expr)
		}
		if len(unknown) > 0 {
			t.Errorf("%s: metrics no service exports: %v in %s", where, unknown, expr)
		}
		for _, m := range metricRef.FindAllString(expr, -1) {
			used[m] = true
		}
	}
	ids := map[int]string{}
	var walk func(ps []panel)
	var exprs int
	walk = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs++
				check("panel "+strconv.Quote(p.Title), tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		check("variable "+v.Name, q)
	}
	// The panels the issue asks for are there.
	for _, m := range []string{"moemesh_gateway_requests_total", "moemesh_gateway_time_to_first_token_seconds_bucket",
		"moemesh_gateway_completion_tokens_total", "moemesh_router_expert_tokens_total", "moemesh_router_kv_bytes",
		"moemesh_expertd_queue_batches", "moemesh_expertd_memory_used_bytes", "moemesh_router_dispatch_seconds_bucket"} {
		if !used[m] {
			t.Errorf("no panel uses %s", m)
		}
	}
	t.Logf("%d panels, %d expressions over %d metric names, all exported", len(ids), exprs, len(used))
}
