// Package ews is the Exchange side of mailbus: a client of Exchange Web Services (SOAP
// over HTTP, with Basic, NTLM or OAuth2 bearer authentication), the requests and replies a
// route needs (FindItem, SyncFolderItems, GetItem streamed, UpdateItem, DeleteItem,
// MoveItem, FindFolder), the classification of its failures (IsPermanent, BackOff), and
// the split of a route's filter between a FindItem restriction and a check of the headers.
//
// Its worker (NewWorker) is the Exchange source of the engine (engine.Source): it pages
// through the unread items or syncs the folder, streams each item's MIME into the engine,
// and acts on the acknowledged items. It does not know the IMAP source. Its tests run
// against connector/ewstest, an httptest server speaking EWS SOAP.
package ews
