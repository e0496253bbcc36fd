// Package mapping turns one RFC 5322 message into a mailbus event: bytes in, a
// [schemas.Event] out, with no network. [Map] is the whole API; the connector sets the
// envelope fields (Id, Route, Connection, Bus, Mailbox, UidValidity, Uid, ReceivedAt, RawRef).
//
// # Streaming
//
// The message is read once, front to back. An attachment is buffered up to the inline limit
// (Options.MaxInlineBytes + 1 bytes); when it is larger, the buffered prefix and the rest of
// the part are handed to Options.Sink as one reader, hashed and counted on the way, so memory
// does not grow with attachment size. TextBody and HtmlBody are capped at 16 MiB each (the
// rest is dropped with a warning), the top-level header at 1 MiB, the search for a missing
// boundary at 16 MiB. Size is the number of bytes read: Map always reads its input to the end.
//
// # Parsing
//
// go-message supplies the multipart reader and, through its charset package, the legacy
// charsets (windows-1251, koi8-r, iso-8859-x, gb2312, shift_jis, iso-2022-jp, big5 and
// more). Some parts are written here, for leniency or for exact bytes:
//   - the top-level header reader skips an mbox "From " line and treats a line that is not a
//     field as the start of the body (as Python's email package does) rather than failing;
//   - Content-Type and Content-Disposition parameters are parsed leniently (unquoted blanks,
//     duplicates) and RFC 2231 values are decoded in any charset, not only UTF-8;
//   - base64 and quoted-printable decoders skip damage instead of stopping at it;
//   - charset conversion is applied to body text only, so an attachment's bytes, Size and
//     Sha256 are exactly what was sent (a windows-1251 .csv stays windows-1251).
//
// # Choices
//
//   - Bodies: TextBody and HtmlBody are the first text/plain and text/html part that is not
//     an attachment, in any multipart nesting; CRLF line ends become LF. format=flowed is not
//     reflowed. A message with only HTML has an empty TextBody.
//   - Attachments: a part with Content-Disposition attachment, a file name, or a type other
//     than text/plain and text/html (multipart excepted). A text part after the first of its
//     type (a list footer, the second text of an Apple Mail message) is an attachment too, so
//     nothing is lost. message/rfc822 parts are not descended into: they are .eml attachments
//     named after their Subject. Inline is true for a part with a Content-ID that is not
//     disposition attachment; ContentId has no angle brackets.
//   - Names: RFC 2231 wins over RFC 2047 and plain names. Directories are stripped ("C:\x\a.pdf"
//     is "a.pdf"), control characters removed. A part without a name gets
//     attachment-<N>.<ext>, N its 1-based position in Attachments and ext from a built-in
//     table of common types, then mime.ExtensionsByType, then "bin". Extension is the file
//     name's, lower-case, "" when what follows the last dot is not alphanumeric or too long.
//   - Content: Size and Sha256 are of the decoded bytes. Content is omitted when empty. Over
//     the limit without a sink, only Size and Sha256 are kept, with a warning.
//   - Headers: raw UTF-8 is legal (RFC 6532) and kept without a warning; other 8-bit bytes are
//     read in the message's charset (top-level Content-Type, else the first text part's), else
//     windows-1252, with a warning. From is the first address of From. MessageId and
//     InReplyTo keep their angle brackets; ids written without brackets are kept as written.
//     Dates accept a missing day of week, obsolete and common zone names (UT, EST, CET, MSK
//     and so on), numeric zones with a colon, ISO 8601, and asctime; a date with no zone is
//     read as UTC with a warning.
//   - CustomHeaders: every top-level field except From, To, Cc, Bcc, Reply-To, Subject, Date,
//     Message-ID, In-Reply-To, References, MIME-Version and Content-*, even when the
//     allow-list names one of them. A nil allow-list means all; an empty one means none.
//   - Attributes: "header:<Name>" reads any top-level header (decoded, first occurrence),
//     "from" the From address, "subject" and "text" (TextBody) the event's fields. The first
//     group of the regular expression is the value, or the whole match without groups. A rule
//     sets its key only when it yields a non-empty value, and the first rule to set a name
//     wins, so later rules with the same name are fallbacks. A bad rule is skipped with a
//     warning (validating them is the connector's job).
//   - Warnings: short, one per problem, at most 50 plus a count of the rest.
//
// # Errors
//
// Damage is never an error: an unknown charset, broken base64 or quoted-printable, a missing
// or wrong boundary, truncation, a bad address list or date each become a warning on an event
// that keeps what could be decoded. Map fails only with [ErrNoHeader] (not one header field
// could be read), an error reading its input, or a sink's error, wrapped so errors.Is works.
package mapping
