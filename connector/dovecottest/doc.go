// Package dovecottest starts a real Dovecot IMAP server for a test.
//
// The tests of mailbus talk to go-imap's in-memory server by default; a test that also
// wants the real thing calls Start, which skips the test unless the environment switch
// MAILBUS_TEST_DOVECOT=1 is on (CI turns it on after .ci/install-dovecot.sh). With the
// switch on, Start never skips: a missing binary or a broken config fails the test, so
// CI cannot pass by silently testing nothing.
//
// Every Server has its own configuration, sockets, logs, state and mail under one
// temporary directory and listens on free loopback ports, so tests may run several at
// once. Dovecot's master must run as root (it switches to the unprivileged mail user
// "nobody" for mail access and to dovenull/dovecot for its own processes).
package dovecottest
