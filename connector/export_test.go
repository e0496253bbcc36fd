package connector

import (
	"io"

	"github.com/mailbus/mailbus/mapping"
)

// SetMapping replaces the mapping function of rt's workers, for tests that make it panic.
func SetMapping(rt *Runtime, f func(io.Reader, *mapping.Options) (*mapping.Result, error)) {
	rt.mapMessage = f
}
