package router

import (
	"strings"
	"testing"
)

func TestStopper(t *testing.T) {
	cases := []struct {
		name   string
		stops  []string
		chunks []string
		want   string
		hit    bool
	}{
		{"no stops", nil, []string{"a", "b"}, "ab", false},
		{"stop inside one chunk", []string{"END"}, []string{"abcENDxyz"}, "abc", true},
		{"stop across chunks", []string{"END"}, []string{"ab", "cE", "N", "Dzz"}, "abc", true},
		{"false start released", []string{"END"}, []string{"E", "N", "x", "y"}, "ENxy", false},
		{"earliest stop wins", []string{"yy", "x"}, []string{"aayyx"}, "aa", true},
		{"overlapping prefixes", []string{"aab"}, []string{"aa", "aab"}, "aa", true},
		{"multibyte", []string{"。"}, []string{"你好", "。再见"}, "你好", true},
		{"held tail flushed", []string{"\n\n"}, []string{"line\n"}, "line\n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &stopper{stops: c.stops}
			var b strings.Builder
			hit := false
			for _, ch := range c.chunks {
				out, h := s.push(ch)
				b.WriteString(out)
				if h {
					hit = true
					break
				}
			}
			if !hit {
				b.WriteString(s.flush())
			}
			if b.String() != c.want || hit != c.hit {
				t.Fatalf("got %q hit %v, want %q hit %v", b.String(), hit, c.want, c.hit)
			}
		})
	}
}

// Released text never contains a stop string and never needs retracting: the released
// prefix is always a prefix of the whole text.
func TestStopperNeverReleasesAStop(t *testing.T) {
	text := "the cat sat on the mat; the end. the cat sat again"
	for _, stop := range []string{"the end", "cat", "again", "t;", "zz"} {
		for step := 1; step <= 5; step++ {
			s := &stopper{stops: []string{stop}}
			var got strings.Builder
			hit := false
			for i := 0; i < len(text) && !hit; i += step {
				out, h := s.push(text[i:min(i+step, len(text))])
				got.WriteString(out)
				hit = h
				if !strings.HasPrefix(text, got.String()) || strings.Contains(got.String(), stop) {
					t.Fatalf("stop %q step %d released %q", stop, step, got.String())
				}
			}
			want := text
			if i := strings.Index(text, stop); i >= 0 {
				want = text[:i]
			} else {
				got.WriteString(s.flush())
			}
			if got.String() != want {
				t.Fatalf("stop %q step %d: %q, want %q", stop, step, got.String(), want)
			}
		}
	}
}
