package testenv

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Exposition is a parsed Prometheus text exposition (format 0.0.4).
type Exposition struct {
	// Types maps a metric family to its type.
	Types map[string]string
	// Samples maps a series, written `name{label="value",...}` with the
	// labels sorted by name (just `name` without labels), to its value.
	Samples map[string]float64
}

// Value returns the value of a series (see Samples); ok false if absent.
func (e *Exposition) Value(series string) (float64, bool) {
	v, ok := e.Samples[series]
	return v, ok
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// ParseExposition parses text strictly, as what the node exporter's
// textfile collector accepts and a little more: every line ends with a
// line feed; no empty line, no comment but HELP and TYPE; each family has
// exactly one HELP and one TYPE line, before its samples, and its
// samples are contiguous; names and label names are valid, label values
// properly quoted and escaped; no duplicate series; no timestamps; a
// counter's name ends in "_total" and its values are finite and not
// negative. Errors name the line.
func ParseExposition(text string) (*Exposition, error) {
	e := &Exposition{Types: map[string]string{}, Samples: map[string]float64{}}
	if text == "" {
		return nil, errors.New("empty exposition")
	}
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("the last line does not end with a line feed")
	}
	help := map[string]bool{}
	done := map[string]bool{} // families whose samples are over
	current := ""
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		fail := func(format string, args ...any) (*Exposition, error) {
			return nil, fmt.Errorf("line %d: %s: %q", n, fmt.Sprintf(format, args...), line)
		}
		switch {
		case line == "":
			return fail("empty line")
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			kind := line[2:6]
			name, rest, ok := strings.Cut(line[7:], " ")
			if !ok || !metricName.MatchString(name) {
				return fail("bad metric name")
			}
			if done[name] || current == name {
				return fail("%s after the samples of %s", kind, name)
			}
			if kind == "HELP" {
				if help[name] {
					return fail("second HELP of %s", name)
				}
				if err := checkEscapes(rest, false); err != nil {
					return fail("%v", err)
				}
				help[name] = true
				continue
			}
			if _, dup := e.Types[name]; dup {
				return fail("second TYPE of %s", name)
			}
			switch rest {
			case "counter", "gauge", "untyped", "histogram", "summary":
			default:
				return fail("unknown type %q", rest)
			}
			if rest == "counter" && !strings.HasSuffix(name, "_total") {
				return fail("counter %s does not end in _total", name)
			}
			e.Types[name] = rest
		case strings.HasPrefix(line, "#"):
			return fail("comment other than HELP or TYPE")
		default:
			name, series, value, err := parseSample(line)
			if err != nil {
				return fail("%v", err)
			}
			typ, ok := e.Types[name]
			if !ok || !help[name] {
				return fail("sample of %s without its HELP and TYPE before it", name)
			}
			if done[name] {
				return fail("samples of %s not together", name)
			}
			if current != name {
				if current != "" {
					done[current] = true
				}
				current = name
			}
			if _, dup := e.Samples[series]; dup {
				return fail("duplicate series %s", series)
			}
			if typ == "counter" && (value < 0 || math.IsNaN(value) || math.IsInf(value, 0)) {
				return fail("counter value %v", value)
			}
			e.Samples[series] = value
		}
	}
	for name := range e.Types {
		if !help[name] {
			return nil, fmt.Errorf("%s has a TYPE and no HELP", name)
		}
	}
	return e, nil
}

// parseSample parses `name{l="v",...} value` (no timestamp).
func parseSample(line string) (name, series string, value float64, err error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", "", 0, errors.New("no value")
	}
	name = line[:i]
	if !metricName.MatchString(name) {
		return "", "", 0, errors.New("bad metric name")
	}
	rest := line[i:]
	var labels []string
	if rest[0] == '{' {
		rest = rest[1:]
		seen := map[string]bool{}
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return "", "", 0, errors.New("label without =")
			}
			ln := rest[:eq]
			if !labelName.MatchString(ln) || strings.HasPrefix(ln, "__") {
				return "", "", 0, fmt.Errorf("bad label name %q", ln)
			}
			if seen[ln] {
				return "", "", 0, fmt.Errorf("label %s twice", ln)
			}
			seen[ln] = true
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return "", "", 0, errors.New("label value not quoted")
			}
			end := 1
			for ; end < len(rest); end++ {
				if rest[end] == '\\' {
					end++
					continue
				}
				if rest[end] == '"' {
					break
				}
			}
			if end >= len(rest) {
				return "", "", 0, errors.New("unterminated label value")
			}
			val := rest[1:end]
			if err := checkEscapes(val, true); err != nil {
				return "", "", 0, err
			}
			labels = append(labels, ln+`="`+val+`"`)
			rest = rest[end+1:]
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return "", "", 0, errors.New("labels not separated by a comma")
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return "", "", 0, errors.New("no space before the value")
	}
	rest = rest[1:]
	if strings.Contains(rest, " ") {
		return "", "", 0, errors.New("a timestamp or trailing text after the value")
	}
	switch rest {
	case "NaN":
		value = math.NaN()
	case "+Inf":
		value = math.Inf(1)
	case "-Inf":
		value = math.Inf(-1)
	default:
		value, err = strconv.ParseFloat(rest, 64)
		if err != nil || strings.ContainsAny(rest, "_xXpP") || strings.EqualFold(rest, "inf") || strings.EqualFold(rest, "infinity") {
			return "", "", 0, fmt.Errorf("bad value %q", rest)
		}
	}
	series = name
	if len(labels) > 0 {
		slices.Sort(labels)
		series += "{" + strings.Join(labels, ",") + "}"
	}
	return name, series, value, nil
}

// checkEscapes accepts only \\ and \n (and \" in a label value) after a
// backslash, and no raw line feed.
func checkEscapes(s string, label bool) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			return errors.New("raw line feed")
		case '"':
			if label {
				return errors.New("unescaped double quote")
			}
		case '\\':
			if i+1 >= len(s) {
				return errors.New("backslash at the end")
			}
			i++
			if c := s[i]; c != '\\' && c != 'n' && !(label && c == '"') {
				return fmt.Errorf("bad escape \\%c", c)
			}
		}
	}
	return nil
}
