package mapping

import (
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/mailbus/mailbus/schemas"
)

// fastAddressList parses an address list of the plain forms nearly all mail has, "a@b" and
// "Name <a@b>" (the name made of atoms and RFC 2047 encoded-words), and appends the
// addresses to out. What it returns is what net/mail's AddressParser{WordDecoder: dec}
// ParseList returns for the same list (FuzzFastAddressList compares them), without the
// parser's allocations: net/mail was the largest part of the mapping of small mail.
//
// ok is false, and out returned as it came, for any list with more than these forms
// (quoted strings, comments, groups, domain literals, blanks inside an address, invalid
// UTF-8), and for one net/mail would refuse: the caller then parses it with net/mail.
// Names are decoded with dec as net/mail does, after the whole list was found to be of
// these forms, so that a list that falls back has decoded nothing.
func fastAddressList(s string, dec *mime.WordDecoder, out []schemas.Address) ([]schemas.Address, bool) {
	if !utf8.ValidString(s) || !scanAddressList(s, nil, nil) {
		return out, false
	}
	n := len(out)
	if !scanAddressList(s, dec, &out) {
		return out[:n], false
	}
	return out, true
}

// scanAddressList walks the list; with out nil it only checks that the list has the forms
// of fastAddressList, otherwise it appends the addresses, decoding names with dec.
func scanAddressList(s string, dec *mime.WordDecoder, out *[]schemas.Address) bool {
	i, items := 0, 0
	for {
		i = skipBlanks(s, i)
		if i == len(s) {
			return items > 0
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
				return false
			}
			spec, i = s[i:k], k
		default:
			// A phrase: words of atext and dots, separated by blanks, up to the '<'.
			start, end := i, i
			for i < len(s) {
				w := atomEnd(s, i)
				if w == i {
					break
				}
				end = w
				i = skipBlanks(s, w)
			}
			if i == len(s) || s[i] != '<' {
				return false
			}
			k := atomEnd(s, i+1)
			if k == len(s) || s[k] != '@' || !strictDotAtom(s[i+1:k]) {
				return false
			}
			l := atomEnd(s, k+1)
			if l == len(s) || s[l] != '>' || !strictDotAtom(s[k+1:l]) {
				return false
			}
			spec, i = s[i+1:l], l+1
			if out != nil && end > start {
				var ok bool
				if name, ok = decodePhrase(s[start:end], dec); !ok {
					return false
				}
			}
		}
		items++
		if out != nil {
			*out = append(*out, schemas.Address{Name: name, Address: spec})
		}
		i = skipBlanks(s, i)
		if i < len(s) && s[i] != ',' {
			return false
		}
	}
}

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
func decodePhrase(p string, dec *mime.WordDecoder) (string, bool) {
	if !strings.Contains(p, "=?") && !strings.Contains(p, "  ") && !strings.Contains(p, "\t") {
		return p, true // plain words with single blanks: net/mail's result is p itself
	}
	var b, pending strings.Builder
	words := 0
	put := func(w string) {
		if words > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		words++
	}
	for i := 0; i < len(p); {
		j := atomEnd(p, i)
		if j == i {
			return "", false // not a phrase of scanAddressList's: cannot happen
		}
		word := p[i:j]
		i = skipBlanks(p, j)
		if looksEncoded(word) {
			d, err := dec.Decode(word)
			if err != nil {
				return "", false
			}
			pending.WriteString(d)
			continue
		}
		if pending.Len() > 0 {
			put(pending.String())
			pending.Reset()
		}
		put(word)
	}
	if pending.Len() > 0 {
		put(pending.String())
	}
	// Encoded-words that all decode to nothing leave net/mail without a word: it refuses
	// the address.
	return b.String(), words > 0
}

// looksEncoded is mime.WordDecoder.Decode's first test: a word that fails it is returned
// by net/mail as it is.
func looksEncoded(w string) bool {
	return len(w) >= 8 && strings.HasPrefix(w, "=?") && strings.HasSuffix(w, "?=") && strings.Count(w, "?") == 4
}
