package expertd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
)

func TestParseRanges(t *testing.T) {
	cases := []struct {
		in    string
		limit int
		want  string
		err   string
	}{
		{"0-3,8", 10, "[0 1 2 3 8]", ""},
		{"8, 0-3 ,2", 10, "[0 1 2 3 8]", ""},
		{"all", 4, "[0 1 2 3]", ""},
		{"*", 2, "[0 1]", ""},
		{"5", 6, "[5]", ""},
		{"6", 6, "", "outside 0-5"},
		{"3-1", 6, "", "outside"},
		{"x", 6, "", "not a number"},
		{"1-y", 6, "", "not a number"},
		{"-1", 6, "", "not a number"},
		{"", 6, "", "selects nothing"},
	}
	for _, c := range cases {
		got, err := ParseRanges(c.in, c.limit)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseRanges(%q) err = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("ParseRanges(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

func TestAssignmentNone(t *testing.T) {
	cfg := &model.Config{Layers: 4, Experts: 8}
	keys, err := Assignment(cfg, "all", "none")
	if err != nil || keys == nil || len(keys) != 0 {
		t.Fatalf("experts none: %v, %v; want an empty set", keys, err)
	}
	if _, err := Assignment(cfg, "all", ""); err == nil {
		t.Fatal("an empty --experts was taken for none")
	}
}
