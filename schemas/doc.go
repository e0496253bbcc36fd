// Package schemas is the vocabulary of mailbus: the mail-attribute event published on the
// bus subjects, the connection and route definitions sent on the control subject, and the
// control requests and replies. JSON names follow the outside contract exactly.
//
// The JSON Schema (draft 2020-12) of each type is embedded in [Files] so subscribers in any
// language can validate what they receive. This package imports nothing of mailbus.
package schemas
