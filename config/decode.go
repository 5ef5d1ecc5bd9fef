package config

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config, at a key path such as
// "backup_sites.default.compression.algorithm".
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Errors holds every problem found in a config, in key order.
type Errors []Problem

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (e *Errors) add(path, format string, args ...any) {
	*e = append(*e, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// customDecoder is implemented by config types that decode themselves (the
// object storage block, whose keys depend on its storage_type).
type customDecoder interface {
	decodeConfig(d *decoder, v any, path string)
}

type decoder struct {
	errs Errors
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode walks the generic JSON value v (decoded with UseNumber) into the
// target, which already holds the defaults. JSON null leaves a non-pointer
// target at its default and sets a pointer target to nil.
//
// It is long because it is one case per kind of value the config holds.
func (d *decoder) decode(v any, target reflect.Value, path string) {
	if target.CanAddr() {
		if cd, ok := target.Addr().Interface().(customDecoder); ok {
			cd.decodeConfig(d, v, path)
			return
		}
	}
	if v == nil {
		if target.Kind() == reflect.Pointer || target.Kind() == reflect.Map || target.Kind() == reflect.Slice {
			target.SetZero()
		}
		return
	}
	switch target.Kind() {
	case reflect.Pointer:
		if target.IsNil() {
			target.Set(reflect.New(target.Type().Elem()))
		}
		d.decode(v, target.Elem(), path)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			d.errs.add(path, "must be an object, not %s", describe(v))
			return
		}
		d.decodeStruct(obj, target, path)
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			d.errs.add(path, "must be an object, not %s", describe(v))
			return
		}
		if target.IsNil() {
			target.Set(reflect.MakeMap(target.Type()))
		}
		for _, k := range sortedKeys(obj) {
			elem := reflect.New(target.Type().Elem()).Elem()
			if elem.Kind() == reflect.Pointer {
				elem.Set(reflect.New(elem.Type().Elem()))
				if df, ok := elem.Interface().(interface{ setDefaults() }); ok {
					df.setDefaults()
				}
			}
			d.decode(obj[k], elem, join(path, k))
			target.SetMapIndex(reflect.ValueOf(k), elem)
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			d.errs.add(path, "must be a list, not %s", describe(v))
			return
		}
		out := reflect.MakeSlice(target.Type(), len(arr), len(arr))
		for i, item := range arr {
			d.decode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		target.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.errs.add(path, "must be a string, not %s", describe(v))
			return
		}
		target.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.errs.add(path, "must be true or false, not %s", describe(v))
			return
		}
		target.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(json.Number)
		if !ok {
			d.errs.add(path, "must be a whole number, not %s", describe(v))
			return
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			// allow 10.0 but not 10.5
			f, ferr := strconv.ParseFloat(string(n), 64)
			if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<62 {
				d.errs.add(path, "must be a whole number, not %s", n)
				return
			}
			i = int64(f)
		}
		if target.OverflowInt(i) {
			d.errs.add(path, "number %d is out of range", i)
			return
		}
		target.SetInt(i)
	case reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			d.errs.add(path, "must be a number, not %s", describe(v))
			return
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			d.errs.add(path, "bad number %s", n)
			return
		}
		target.SetFloat(f)
	case reflect.Interface:
		target.Set(reflect.ValueOf(v))
	default:
		d.errs.add(path, "cannot be set (internal: unsupported kind %s)", target.Kind())
	}
}

// decodeStruct sets the fields named by their json tags and reports keys
// that match no field, with the nearest known key as a suggestion.
func (d *decoder) decodeStruct(obj map[string]any, target reflect.Value, path string) {
	fields := structFields(target.Type())
	for _, k := range sortedKeys(obj) {
		idx, ok := fields[k]
		if !ok {
			names := make([]string, 0, len(fields))
			for n := range fields {
				names = append(names, n)
			}
			msg := "unknown key"
			if s := suggest(k, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errs.add(join(path, k), "%s", msg)
			continue
		}
		d.decode(obj[k], target.Field(idx), join(path, k))
	}
}

func structFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = i
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("%v", x)
	case json.Number:
		return "the number " + string(x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// suggest returns the known name nearest to key when it is close enough to
// be a typo: edit distance of at most 2 (3 for long names), or equal once
// case, dashes and underscores are ignored.
func suggest(key string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("-", "", "_", "", ".", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 1<<30
	sort.Strings(known)
	for _, k := range known {
		if norm(k) == norm(key) {
			return k
		}
		dist := levenshtein(strings.ToLower(key), k)
		if dist < bestDist {
			best, bestDist = k, dist
		}
	}
	limit := 2
	if len(key) > 12 {
		limit = 3
	}
	if bestDist <= limit {
		return best
	}
	// a key that is a prefix or suffix of a known key (or the reverse)
	for _, k := range known {
		if len(key) >= 4 && (strings.HasPrefix(k, key) || strings.HasSuffix(k, key) || strings.HasPrefix(key, k)) {
			return k
		}
	}
	return ""
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
