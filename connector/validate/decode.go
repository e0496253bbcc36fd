package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"github.com/mailbus/mailbus/schemas"
)

// Decode reads exactly one JSON value into v, refusing unknown fields, wrong types
// and trailing data with an invalid error that names the field. An empty body reads as {}.
func Decode(data []byte, v any) *schemas.Error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(data, v, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Invalid("", "unexpected data after the JSON value at offset %d", dec.InputOffset())
	}
	return nil
}

// decodeError names the field of a decoding failure. encoding/json gives the path of a
// type mismatch, but only the last name of an unknown field and nothing for an error of a
// field's own UnmarshalJSON (a bad duration), so for those the JSON is walked again.
func decodeError(data []byte, v any, err error) *schemas.Error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return Invalid("", "malformed JSON at offset %d: %v", syntax.Offset, syntax)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Invalid("", "malformed JSON: it ends too early")
	case errors.As(err, &typ) && typ.Field == "":
		return Invalid("", "want a JSON object, got %s", typ.Value)
	case errors.As(err, &typ):
		return Invalid(typ.Field, "%s: want %s, got %s", typ.Field, kindName(typ.Type), typ.Value)
	}
	var generic any
	if json.Unmarshal(data, &generic) == nil {
		if field, msg := fieldProblem(generic, reflect.TypeOf(v), ""); field != "" {
			return Invalid(field, "%s", msg)
		}
	}
	return Invalid("", "%v", err)
}

// kindName says what JSON a Go type wants, for type mismatch messages.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}

var durationType = reflect.TypeFor[schemas.Duration]()

// fieldProblem walks a decoded JSON value v along the Go type t and returns the path and
// message of the first unknown field or bad duration, in sorted key order.
func fieldProblem(v any, t reflect.Type, path string) (field, msg string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		b, _ := json.Marshal(v)
		var d schemas.Duration
		if err := d.UnmarshalJSON(b); err != nil {
			return path, fmt.Sprintf("%s: %v", path, err)
		}
		return "", ""
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return "", ""
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := jsonField(t, k)
			if !ok {
				return p, fmt.Sprintf("unknown field %q", p)
			}
			if f, msg := fieldProblem(m[k], ft, p); f != "" {
				return f, msg
			}
		}
	case reflect.Slice:
		a, _ := v.([]any)
		for i, e := range a {
			if f, msg := fieldProblem(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); f != "" {
				return f, msg
			}
		}
	}
	return "", ""
}

// jsonField finds the type of the struct field that encoding/json fills from key (it
// matches names case-insensitively).
func jsonField(t reflect.Type, key string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.EqualFold(name, key) {
			return f.Type, true
		}
	}
	return nil, false
}
