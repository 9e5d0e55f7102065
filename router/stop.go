package router

import "strings"

// stopper cuts a text stream at the first of a set of stop strings. It holds back the
// longest tail that could still grow into a stop string, so text it has released never
// has to be taken back.
type stopper struct {
	stops   []string
	pending string
}

// push adds text and returns what may be released; hit reports a stop string was found
// (released then ends just before it, and the stream is over).
func (s *stopper) push(text string) (released string, hit bool) {
	s.pending += text
	if len(s.stops) == 0 {
		out := s.pending
		s.pending = ""
		return out, false
	}
	first := -1
	for _, st := range s.stops {
		if i := strings.Index(s.pending, st); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		out := s.pending[:first]
		s.pending = ""
		return out, true
	}
	keep := 0
	for _, st := range s.stops {
		for n := min(len(st)-1, len(s.pending)); n > keep; n-- {
			if strings.HasSuffix(s.pending, st[:n]) {
				keep = n
				break
			}
		}
	}
	out := s.pending[:len(s.pending)-keep]
	s.pending = s.pending[len(s.pending)-keep:]
	return out, false
}

// flush releases what is held back (the stream ended without a stop string).
func (s *stopper) flush() string {
	out := s.pending
	s.pending = ""
	return out
}
