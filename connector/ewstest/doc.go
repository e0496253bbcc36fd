// Package ewstest is a fake Exchange server for tests: an httptest server speaking real EWS
// SOAP. It checks what mailbus sends as Exchange would (the envelope, the namespace of every
// element, the documented order of children, Basic and NTLMv2 authentication, bearer
// tokens and impersonation) and answers with replies shaped like those of the EWS
// reference: FindItem with restrictions and paging, SyncFolderItems, GetItem (MIME content
// or headers only), UpdateItem, DeleteItem, MoveItem and FindFolder, and faults such as
// ErrorServerBusy with a back-off. It holds one mailbox, changed as the requests ask.
//
// It is the Exchange counterpart of go-imap's in-memory server and of dovecottest: the
// tests of connector/ews and the route tests of connector run against it.
package ewstest
