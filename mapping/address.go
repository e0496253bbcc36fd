package mapping

import (
	"encoding/base64"
	"mime"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailbus/mailbus/schemas"
)

// fastAddressList parses an address list of the plain forms nearly all mail has, "a@b" and
// "Name <a@b>" (the name made of atoms, RFC 2047 encoded-words and quoted strings, as
// Outlook writes it), and appends the
// addresses to out. What it returns is what net/mail's AddressParser{WordDecoder: dec}
// ParseList returns for the same list (FuzzFastAddressList compares them), without the
// parser's allocations: net/mail was the largest part of the mapping of small mail.
//
// ok is false, and out returned as it came, for any list with more than these forms
// (comments, groups, domain literals, quoted local parts, blanks inside an address,
// invalid UTF-8), and for one net/mail would refuse: the caller then parses it with net/mail.
// Names are decoded with dec as net/mail does, after the whole list was found to be of
// these forms, so that a list that falls back has decoded nothing.
func fastAddressList(s string, dec *mime.WordDecoder, out []schemas.Address) ([]schemas.Address, bool) {
	if !utf8.ValidString(s) {
		return out, false
	}
	items, ok := scanAddressList(s, nil, nil)
	if !ok {
		return out, false
	}
	n := len(out)
	out = slices.Grow(out, items)
	if _, ok := scanAddressList(s, dec, &out); !ok {
		return out[:n], false
	}
	return out, true
}

// scanAddressList walks the list; with out nil it only checks that the list has the forms
// of fastAddressList, otherwise it appends the addresses, decoding names with dec. It
// returns how many addresses the list has.
func scanAddressList(s string, dec *mime.WordDecoder, out *[]schemas.Address) (int, bool) {
	var buf [256]byte
	scratch := buf[:0]
	i, items := 0, 0
	for {
		i = skipBlanks(s, i)
		if i == len(s) {
			return items, items > 0
		}
		if s[i] == ',' { // empty elements are skipped (obs-addr-list), as net/mail does
			i++
			continue
		}
		// net/mail tries an addr-spec first, then a display name and an angle-addr.
		j := atomEnd(s, i)
		var name, spec string
		switch {
		case j > i && j < len(s) && s[j] == '@':
			k := atomEnd(s, j+1)
			if !strictDotAtom(s[i:j]) || !strictDotAtom(s[j+1:k]) {
				return 0, false
			}
			spec, i = s[i:k], k
		default:
			// A phrase: words of atext and dots, or quoted strings, up to the '<'.
			start, end := i, i
			for i < len(s) {
				w, ok := phraseWordEnd(s, i)
				if !ok {
					return 0, false
				}
				if w == i {
					break
				}
				end = w
				i = skipBlanks(s, w)
			}
			if i == len(s) || s[i] != '<' {
				return 0, false
			}
			k := atomEnd(s, i+1)
			if k == len(s) || s[k] != '@' || !strictDotAtom(s[i+1:k]) {
				return 0, false
			}
			l := atomEnd(s, k+1)
			if l == len(s) || s[l] != '>' || !strictDotAtom(s[k+1:l]) {
				return 0, false
			}
			spec, i = s[i+1:l], l+1
			if out != nil && end > start {
				var ok bool
				if name, scratch, ok = decodePhrase(s[start:end], dec, scratch); !ok {
					return 0, false
				}
			}
		}
		items++
		if out != nil {
			*out = append(*out, schemas.Address{Name: name, Address: spec})
		}
		i = skipBlanks(s, i)
		if i < len(s) && s[i] != ',' {
			return 0, false
		}
	}
}

// phraseWordEnd returns where the word of a phrase that starts at i ends: a run of atext
// and dots, or a quoted string (i itself if neither starts there). ok is false for a
// quoted string net/mail would refuse.
func phraseWordEnd(s string, i int) (end int, ok bool) {
	if i == len(s) || s[i] != '"' {
		return atomEnd(s, i), true
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\': // quoted-pair: a visible character or a blank
			j++
			if j == len(s) || s[j] < utf8.RuneSelf && !isQuotable(s[j]) {
				return 0, false
			}
		case c >= utf8.RuneSelf || isQuotable(c):
		default:
			return 0, false
		}
	}
	return 0, false // not closed
}

// isQuotable reports whether the ASCII c may stand in a quoted string (after a backslash
// if it is a quote or a backslash): visible, or a blank.
func isQuotable(c byte) bool { return c >= '!' && c <= '~' || c == ' ' || c == '\t' }

func skipBlanks(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// atomEnd returns where the run of atext and dots that starts at i ends. Bytes of
// multi-byte UTF-8 characters are atext (RFC 6532), as net/mail has it; the list is valid
// UTF-8.
func atomEnd(s string, i int) int {
	for i < len(s) && isAtextByte(s[i]) {
		i++
	}
	return i
}

// isAtextByte reports whether c is RFC 5322 atext, a dot, or part of a multi-byte UTF-8
// character.
func isAtextByte(c byte) bool { return atextBytes[c] }

var atextBytes = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= utf8.RuneSelf || c >= '!' && c <= '~' && !strings.ContainsRune(`()<>[]:;@\,"`, rune(c))
	}
	return t
}()

// strictDotAtom reports whether a (a run of atomEnd) is a dot-atom: not empty, no dot at
// either end, no two dots in a row.
func strictDotAtom(a string) bool {
	return a != "" && a[0] != '.' && a[len(a)-1] != '.' && !strings.Contains(a, "..")
}

// decodePhrase returns a display name as net/mail's consumePhrase makes it from the words
// of p: each word decoded if it is an encoded-word, encoded-words in a row joined without
// a blank (and left out when that gives nothing), and the words joined with one blank. ok
// is false when a word that looks like an encoded-word fails to decode (net/mail's answer
// then depends on why, so the caller leaves the list to it), and when no word is left.
// scratch is a buffer to reuse.
func decodePhrase(p string, dec *mime.WordDecoder, scratch []byte) (name string, buf []byte, ok bool) {
	if !strings.Contains(p, "=?") && !strings.Contains(p, "  ") && !strings.ContainsAny(p, "\t\"") {
		return p, scratch, true // plain words with single blanks: net/mail's result is p itself
	}
	out := scratch[:0]
	words := 0
	inRun, runSep, runStart := false, 0, 0 // a run of encoded-words
	for i := 0; i <= len(p); {
		word, last, quoted := "", i >= len(p), false
		if !last {
			j, ok := phraseWordEnd(p, i)
			if !ok || j == i {
				return "", out, false // not a phrase of scanAddressList's: cannot happen
			}
			word, quoted = p[i:j], p[i] == '"'
			i = skipBlanks(p, j)
		} else {
			i++ // past the end: close the last run
		}
		if !last && !quoted && looksEncoded(word) {
			if !inRun {
				inRun, runSep = true, len(out)
				if words > 0 {
					out = append(out, ' ')
				}
				runStart = len(out)
			}
			if out, ok = appendWord(out, word, dec); !ok {
				return "", out, false
			}
			continue
		}
		if inRun {
			if len(out) == runStart {
				out = out[:runSep] // nothing in it: no word, no blank before it
			} else {
				words++
			}
			inRun = false
		}
		if !last {
			if words > 0 {
				out = append(out, ' ')
			}
			if quoted { // its content, each quoted-pair its character; never decoded
				for k := 1; k < len(word)-1; k++ {
					if word[k] == '\\' {
						k++
					}
					out = append(out, word[k])
				}
			} else {
				out = append(out, word...)
			}
			words++
		}
	}
	// Encoded-words that all decode to nothing leave net/mail without a word: it refuses
	// the address.
	return string(out), out, words > 0
}

// appendWord appends what dec.Decode(word) returns; ok is false when it fails. A UTF-8
// word (nearly all) is decoded here as Decode does it, into out: Decode allocated its
// content, its result and a buffer for each word.
func appendWord(out []byte, word string, dec *mime.WordDecoder) ([]byte, bool) {
	cs, rest, _ := strings.Cut(word[2:len(word)-2], "?")
	enc, text, _ := strings.Cut(rest, "?")
	if cs == "" || len(enc) != 1 || !strings.EqualFold("utf-8", cs) {
		d, err := dec.Decode(word)
		return append(out, d...), err == nil
	}
	switch enc[0] {
	case 'B', 'b':
		var tmp [128]byte
		src := append(tmp[:0], text...)
		n := len(out)
		out = slices.Grow(out, base64.StdEncoding.DecodedLen(len(src)))
		m, err := base64.StdEncoding.Decode(out[n:n+base64.StdEncoding.DecodedLen(len(src))], src)
		return out[:n+m], err == nil
	case 'Q', 'q':
		for i := 0; i < len(text); i++ {
			switch c := text[i]; {
			case c == '_':
				out = append(out, ' ')
			case c == '=':
				if i+2 >= len(text) || !isHex(text[i+1]) || !isHex(text[i+2]) {
					return out, false
				}
				out = append(out, unhex(text[i+1])<<4|unhex(text[i+2]))
				i += 2
			case c <= '~' && c >= ' ' || c == '\n' || c == '\r' || c == '\t':
				out = append(out, c)
			default:
				return out, false
			}
		}
		return out, true
	}
	return out, false
}

// looksEncoded is mime.WordDecoder.Decode's first test: a word that fails it is returned
// by net/mail as it is.
func looksEncoded(w string) bool {
	return len(w) >= 8 && strings.HasPrefix(w, "=?") && strings.HasSuffix(w, "?=") && strings.Count(w, "?") == 4
}
