package tokenizer

import "unicode/utf8"

// repairUTF8 decodes src following the WHATWG Encoding Standard UTF-8 decoder,
// appending valid text to dst and one U+FFFD per maximal invalid subpart. The
// exact replacement rule matters: the goldens were produced from JS strings made
// by TextDecoder, so any other rule (e.g. one U+FFFD per byte) changes the ids.
// If final is false, an incomplete but so-far valid sequence at the end is not
// consumed; rest returns its bytes so a stream can retry once more bytes arrive.
func repairUTF8(dst, src []byte, final bool) (out []byte, rest []byte) {
	i := 0
	for i < len(src) {
		b := src[i]
		if b < utf8.RuneSelf {
			dst = append(dst, b)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case b >= 0xC2 && b <= 0xDF:
			need = 1
		case b >= 0xE0 && b <= 0xEF:
			need = 2
			if b == 0xE0 {
				lo = 0xA0
			} else if b == 0xED {
				hi = 0x9F
			}
		case b >= 0xF0 && b <= 0xF4:
			need = 3
			if b == 0xF0 {
				lo = 0x90
			} else if b == 0xF4 {
				hi = 0x8F
			}
		default:
			dst = append(dst, "\uFFFD"...)
			i++
			continue
		}
		j := i + 1
		ok := true
		for seen := 0; seen < need; seen++ {
			if j >= len(src) {
				if !final {
					return dst, src[i:]
				}
				ok = false
				break
			}
			c := src[j]
			if c < lo || c > hi {
				ok = false
				break
			}
			lo, hi = 0x80, 0xBF
			j++
		}
		if ok {
			dst = append(dst, src[i:j]...)
		} else {
			// The offending byte is not consumed: it starts the next attempt.
			dst = append(dst, "\uFFFD"...)
		}
		i = j
	}
	return dst, nil
}

// sanitize returns s with invalid UTF-8 repaired (see repairUTF8).
func sanitize(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out, _ := repairUTF8(make([]byte, 0, len(s)+8), []byte(s), true)
	return string(out)
}

// isJSSpace reports whether r is whitespace for JavaScript's \s, trim() and
// friends. The parity target is JS, whose set differs from Rust's White_Space
// in two code points: it includes U+FEFF and excludes U+0085.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

// jsSpaceClass is isJSSpace as the body of a regexp2 character class.
const jsSpaceClass = `\t\n\x0B\f\r \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF`

// bytesToUnicode is the GPT-2 byte-level alphabet: printable bytes map to
// themselves, the other 68 bytes to U+0100+n in order.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()
