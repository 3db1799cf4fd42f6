package scrape

import "bytes"

// maxShapeLabels bounds the labels seriesShape compares pairwise; a series with more is
// read through the parser's Labels, which sorts them.
const maxShapeLabels = 32

// seriesShape reads what check needs of a series of the text formats (0.0.4 and
// OpenMetrics) straight from its bytes as the parser delimited them, which the parser has
// already found well-formed: the metric name and the number of labels, the name
// included. It allocates nothing.
//
// ok is true only in the plain case: a metric name, no label named twice, no label
// named __name__, no empty or escaped quoted name, no NUL byte, at most
// maxShapeLabels labels. In
// any other case check reads the series through the parser's Labels and validSeries,
// as Prometheus does, so that a series that would be refused is refused with the same
// reason. Label values are not looked at: the body is known to be UTF-8, and a value
// may be anything then.
func seriesShape(s []byte) (name []byte, n int, ok bool) {
	var names [maxShapeLabels][]byte
	if len(s) == 0 || s[0] == ' ' || s[0] == '\t' {
		return nil, 0, false // the parser keeps such a space in the name
	}
	if bytes.IndexByte(s, 0) >= 0 {
		return nil, 0, false // the parser's lexers skip NUL bytes where this would not
	}
	i := 0
	if s[i] != '{' {
		j := i
		for j < len(s) && s[j] != '{' && s[j] != ' ' && s[j] != '\t' {
			j++
		}
		name, i = s[i:j], skipSpace(s, j)
	}
	if i == len(s) {
		return name, 1, len(name) > 0
	}
	if s[i] != '{' {
		return nil, 0, false
	}
	i++
	for {
		i = skipSpace(s, i)
		if i == len(s) {
			return nil, 0, false
		}
		if s[i] == '}' {
			break
		}
		var token []byte
		quoted := s[i] == '"'
		if quoted {
			end := bytes.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, 0, false
			}
			token = s[i+1 : i+1+end]
			if len(token) == 0 || bytes.IndexByte(token, '\\') >= 0 {
				return nil, 0, false
			}
			i += end + 2
		} else {
			j := i
			for j < len(s) && s[j] != '=' && s[j] != ' ' && s[j] != '\t' && s[j] != ',' && s[j] != '}' {
				j++
			}
			token, i = s[i:j], j
		}
		i = skipSpace(s, i)
		if i == len(s) {
			return nil, 0, false
		}
		if s[i] != '=' {
			// A quoted name standing alone is the metric's, in the UTF-8 syntax.
			if !quoted || name != nil || (s[i] != ',' && s[i] != '}') {
				return nil, 0, false
			}
			name = token
			if s[i] == ',' {
				i++
			}
			continue
		}
		if len(token) == 0 || string(token) == "__name__" || n == maxShapeLabels {
			return nil, 0, false
		}
		for _, prev := range names[:n] {
			if bytes.Equal(prev, token) {
				return nil, 0, false
			}
		}
		names[n] = token
		n++
		if i = skipValue(s, skipSpace(s, i+1)); i < 0 {
			return nil, 0, false
		}
		if i = skipSpace(s, i); i < len(s) && s[i] == ',' {
			i++
		}
	}
	if len(name) == 0 || i != len(s)-1 {
		return nil, 0, false // the closing brace ends the series
	}
	return name, n + 1, true
}

// skipSpace returns the index of the first byte from i on that is not a space or tab.
func skipSpace(s []byte, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// skipValue returns the index after the quoted label value that starts at i, with its
// escapes, or -1 if none starts there or it does not end.
func skipValue(s []byte, i int) int {
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}
