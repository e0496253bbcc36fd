package schemas

import "embed"

// Files holds the JSON Schema (draft 2020-12) documents of the mailbus wire formats, one per
// file at the root: event.schema.json, connection.schema.json, route.schema.json and
// control.schema.json. Each document's $id is https://mailbus.dev/schemas/<file>, and the
// control schema refers to the connection and route schemas by those ids, so load them all
// into one compiler.
//
//go:embed *.schema.json
var Files embed.FS
