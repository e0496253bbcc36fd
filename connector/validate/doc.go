// Package validate checks definitions as the control plane receives them: connections,
// routes and their filters, each refusal a *schemas.Error naming the field, and fills in
// their defaults. It also decodes requests strictly (Decode). The store refuses what it
// refuses, and the control service answers with its errors.
package validate
