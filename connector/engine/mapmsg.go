package engine

import (
	"fmt"
	"io"

	"github.com/mailbus/mailbus/mapping"
)

// MapSafely maps one message. A panic is a bug on input nobody foresaw: mapping.MapMessage
// turns its own into mapping.ErrPanic, and one that escapes it anyway ends here the same
// way, so that the message becomes a dead letter (with its raw copy) and is never acted
// upon on the strength of an event that may lack part of it.
func (rt *Runtime) MapSafely(r io.Reader, opts *mapping.Options) (res *mapping.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("%w: %v", mapping.ErrPanic, p)
		}
	}()
	f := rt.Map
	if f == nil {
		f = mapping.MapMessage
	}
	return f(r, opts)
}
