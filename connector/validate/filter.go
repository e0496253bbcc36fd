package validate

import (
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/schemas"
)

// Filter checks a route's filter; errors name the field in JSON path form
// (filter.headers[1].name, filter.since). The rules are the filter package's, which the
// sources compile the same filter with.
func Filter(f *schemas.RouteFilter) *schemas.Error { return filter.Validate(f) }
