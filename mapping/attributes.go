package mapping

import (
	"regexp"
	"strings"
	"sync"
)

// attributes applies the route's rules. A rule sets its key only when it yields a non-empty
// value, and the first rule that does wins, so later rules with the same name are fallbacks.
// Rules are validated by the connector; a bad one here is skipped with a warning.
func (m *mapper) attributes(h header) {
	var compiled map[string]*regexp.Regexp // this message's, so a bad one warns once
	for _, rule := range m.opts.Attributes {
		if _, done := m.ev.Attributes[rule.Name]; done || rule.Name == "" {
			continue
		}
		v, ok := m.attributeSource(h, rule.From)
		if !ok {
			m.warn("attribute %q: unknown source %q", rule.Name, rule.From)
			continue
		}
		if rule.Regex != "" {
			re, seen := compiled[rule.Regex]
			if !seen {
				var err error
				if re, err = compileRegex(rule.Regex); err != nil {
					m.warn("attribute %q: bad regex: %v", rule.Name, err)
				}
				if compiled == nil {
					compiled = map[string]*regexp.Regexp{}
				}
				compiled[rule.Regex] = re
			}
			if re == nil {
				continue
			}
			match := re.FindStringSubmatch(v)
			switch {
			case match == nil:
				v = ""
			case len(match) > 1:
				v = match[1]
			default:
				v = match[0]
			}
		}
		if v != "" {
			m.ev.Attributes[rule.Name] = v
		}
	}
}

// regexCache holds the compiled regexes of attribute rules (and the error of a bad one):
// a route maps every message with the same rules, and compiling them for each message
// cost more than mapping a small message. A *regexp.Regexp is safe for concurrent use.
var regexCache struct {
	sync.Mutex
	m map[string]compiledRegex
}

type compiledRegex struct {
	re  *regexp.Regexp
	err error
}

// maxCachedRegexes bounds regexCache; past it regexes are compiled each time.
const maxCachedRegexes = 1024

func compileRegex(expr string) (*regexp.Regexp, error) {
	regexCache.Lock()
	c, ok := regexCache.m[expr]
	regexCache.Unlock()
	if ok {
		return c.re, c.err
	}
	re, err := regexp.Compile(expr)
	regexCache.Lock()
	if regexCache.m == nil {
		regexCache.m = map[string]compiledRegex{}
	}
	if len(regexCache.m) < maxCachedRegexes {
		regexCache.m[expr] = compiledRegex{re, err}
	}
	regexCache.Unlock()
	return re, err
}

// attributeSource returns the text a rule reads: "header:<Name>" (first occurrence, decoded;
// any header, mapped or not), "subject", "from" (the From address) or "text" (TextBody).
func (m *mapper) attributeSource(h header, from string) (string, bool) {
	from = strings.TrimSpace(from)
	if len(from) > len("header:") && strings.EqualFold(from[:len("header:")], "header:") {
		name := strings.TrimSpace(from[len("header:"):])
		v, ok := h.get(canonicalKey(name))
		if !ok {
			return "", true
		}
		return m.text("header "+name, v), true
	}
	switch strings.ToLower(from) {
	case "subject":
		return m.ev.Subject, true
	case "from":
		if m.ev.From == nil {
			return "", true
		}
		return m.ev.From.Address, true
	case "text":
		return m.ev.TextBody, true
	}
	return "", false
}
