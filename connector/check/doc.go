// Package check is the connection check behind connection.test and `mailbus test`: it
// tries a connection's server stage by stage (resolve, dial, TLS, greeting, login, token,
// a select of each mailbox, and for IMAP an optional round-trip probe) and says in plain
// words, with the field to fix, why a stage failed. IMAP connections are dialled and
// logged in as their routes do (connector/imap), exchange connections through the EWS
// client (connector/ews). The control service gets it injected; it imports neither.
package check
