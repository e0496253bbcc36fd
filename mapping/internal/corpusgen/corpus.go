package main

import (
	"fmt"
	"strings"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

var f = fmt.Sprintf

func corpus() []message {
	ru := "Здравствуйте! Прошу проверить заявку #42.\nС уважением,\nИван Петров\n"
	var ms []message
	add := func(name string, crlf bool, text string) {
		ms = append(ms, message{name, crlf, strings.TrimPrefix(text, "\n")})
	}

	add("gmail-alternative", true, f(`
Delivered-To: support@example.com
Received: by 2002:a05:6a10:8c0b:b0:5a1:1f2e:3c4d with SMTP id n11csp1234567pxa;
        Tue, 24 Nov 2026 10:15:02 -0800 (PST)
X-Google-Smtp-Source: AGHT+IF0abcdefghijklmnopqrstuvwxyz0123456789
ARC-Seal: i=1; a=rsa-sha256; t=1700000000; cv=none; d=google.com; s=arc-20160816;
        b=Zm9vYmFyYmF6
Return-Path: <alice@gmail.com>
Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])
        by mx.google.com with SMTPS id a1sor123456qkb.12.2026.11.24.10.15.01
        for <support@example.com>;
        Tue, 24 Nov 2026 10:15:01 -0800 (PST)
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gmail.com; s=20230601; t=1700000000;
        h=to:subject:message-id:date:from:mime-version:from:to:cc:subject;
        bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=abc
MIME-Version: 1.0
From: Alice Example <alice@gmail.com>
Date: Tue, 24 Nov 2026 19:14:48 +0100
Message-ID: <CAF=Yq3Lk4r9mP0Qw+VbNq1c2d3e4f5g6h7@mail.gmail.com>
Subject: Lunch on Friday?
To: support@example.com
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f60718"

--000000000000a1b2c3d4e5f60718
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

%s
--000000000000a1b2c3d4e5f60718
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

%s
--000000000000a1b2c3d4e5f60718--
`, qp([]byte("Hi team,\n\nShall we have lunch on Friday at the café? — Alice\n")),
		qp([]byte(`<div dir="ltr">Hi team,<div><br></div><div>Shall we have lunch on Friday at the café? — Alice</div></div>`+"\n"))))

	add("gmail-attachment-pdf", true, f(`
MIME-Version: 1.0
Date: Wed, 25 Nov 2026 09:01:12 +0000
Message-ID: <CAB7ef+Xk9x0@mail.gmail.com>
Subject: Invoice 2026-117
From: Bob Builder <bob.builder@gmail.com>
To: Accounts <accounts@example.com>, "Support Desk" <support@example.com>
Cc: carol@example.org
Content-Type: multipart/mixed; boundary="0000000000007f3a9b05f1c2d3e4"

--0000000000007f3a9b05f1c2d3e4
Content-Type: multipart/alternative; boundary="0000000000007f3a9a05f1c2d3e2"

--0000000000007f3a9a05f1c2d3e2
Content-Type: text/plain; charset="UTF-8"

Please find the invoice attached.

--0000000000007f3a9a05f1c2d3e2
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Please find the invoice attached.</div>

--0000000000007f3a9a05f1c2d3e2--
--0000000000007f3a9b05f1c2d3e4
Content-Type: application/pdf; name="Invoice 2026-117.pdf"
Content-Disposition: attachment; filename="Invoice 2026-117.pdf"
Content-Transfer-Encoding: base64
Content-ID: <f_lq2b3c4d0>
X-Attachment-Id: f_lq2b3c4d0

%s
--0000000000007f3a9b05f1c2d3e4--
`, b64(pdf)))

	add("outlook-related-inline-image", true, f(`
Received: from AM0PR01MB1234.eurprd01.prod.exchangelabs.com (2603:10a6:208:12::34)
 by AM0PR01MB5678.eurprd01.prod.exchangelabs.com with HTTPS; Wed, 25 Nov 2026
 08:00:00 +0000
From: "=?utf-8?B?0JjQstCw0L0g0J/QtdGC0YDQvtCy?=" <ivan.petrov@example.org>
To: "Support" <support@example.com>
Subject: =?utf-8?B?0JfQsNGP0LLQutCwICM0Mg==?=
Thread-Topic: =?utf-8?B?0JfQsNGP0LLQutCwICM0Mg==?=
Thread-Index: AdnKLm9s3Xx1c2VyQGV4YW1wbGUuY29t
Date: Wed, 25 Nov 2026 08:00:00 +0000
Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
Accept-Language: ru-RU, en-US
Content-Language: ru-RU
X-MS-Has-Attach: yes
X-MS-TNEF-Correlator:
X-MS-Exchange-Organization-SCL: -1
X-Ticket-Id: 42
Content-Type: multipart/related;
	boundary="_004_AM0PR01MB1234ABCD_";
	type="multipart/alternative"
MIME-Version: 1.0

--_004_AM0PR01MB1234ABCD_
Content-Type: multipart/alternative;
	boundary="_000_AM0PR01MB1234ABCD_"

--_000_AM0PR01MB1234ABCD_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

%s

--_000_AM0PR01MB1234ABCD_
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: base64

%s

--_000_AM0PR01MB1234ABCD_--

--_004_AM0PR01MB1234ABCD_
Content-Type: image/png; name="image001.png"
Content-Description: image001.png
Content-Disposition: inline; filename="image001.png"; size=%d;
	creation-date="Wed, 25 Nov 2026 08:00:00 GMT";
	modification-date="Wed, 25 Nov 2026 08:00:00 GMT"
Content-ID: <image001.png@01DA1F2E.3C4D5E60>
Content-Transfer-Encoding: base64

%s

--_004_AM0PR01MB1234ABCD_--
`, b64([]byte(strings.ReplaceAll(ru, "\n", "\r\n"))),
		b64([]byte(`<html><body><p>Здравствуйте!</p><p><img src="cid:image001.png@01DA1F2E.3C4D5E60"></p></body></html>`)),
		len(png1x1), b64(png1x1)))

	add("outlook-winmail-tnef", true, f(`
From: Legacy Outlook <legacy@example.net>
To: support@example.com
Subject: Report (rich text)
Date: Mon, 23 Nov 2026 16:20:00 -0500
Message-ID: <000001d9a1b2$c3d4e5f0$f6a7b8c9@example.net>
MIME-Version: 1.0
X-Mailer: Microsoft Outlook 16.0
Content-Type: multipart/mixed; boundary="----=_NextPart_000_0001_01D9A1B2.C3D4E5F0"

This is a multi-part message in MIME format.

------=_NextPart_000_0001_01D9A1B2.C3D4E5F0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

The report is in the attached file.

------=_NextPart_000_0001_01D9A1B2.C3D4E5F0
Content-Type: application/ms-tnef; name="winmail.dat"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="winmail.dat"

%s

------=_NextPart_000_0001_01D9A1B2.C3D4E5F0--
`, b64(append([]byte("\x78\x9f\x3e\x22\x01\x06\x90\x08\x00\x04\x00\x00\x00\x00\x00"), random(300, 4)...))))

	add("outlook-docx-rfc2047-name", true, f(`
From: =?iso-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>
To: =?iso-8859-1?Q?B=FCro?= <buero@example.de>
Subject: =?iso-8859-1?Q?Angebot_f=FCr_M=FCnchen?=
Date: Thu, 19 Nov 2026 11:02:33 +0100
Message-ID: <AS8PR07MB7000@AS8PR07MB7000.eurprd07.prod.outlook.com>
Content-Language: de-DE
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="_002_AS8PR07MB7000_"

--_002_AS8PR07MB7000_
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

%s
--_002_AS8PR07MB7000_
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;
	name="=?utf-8?B?QW5nZWJvdCBNw7xuY2hlbi5kb2N4?="
Content-Description: =?utf-8?B?QW5nZWJvdCBNw7xuY2hlbi5kb2N4?=
Content-Disposition: attachment;
	filename="=?utf-8?B?QW5nZWJvdCBNw7xuY2hlbi5kb2N4?="; size=600
Content-Transfer-Encoding: base64

%s

--_002_AS8PR07MB7000_--
`, qp(in(charmap.ISO8859_1, "Sehr geehrte Damen und Herren,\n\nanbei unser Angebot für München.\n\nMit freundlichen Grüßen\nJörg Müller\n")),
		b64(append([]byte("PK\x03\x04\x14\x00\x06\x00"), random(592, 5)...))))

	add("thunderbird-csv-rfc2231", false, f(`
Message-ID: <5f2c1a9e-3b7d-4c2e-9a1f-0d8e7b6c5a43@example.org>
Date: Fri, 20 Nov 2026 14:33:07 +0300
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: en-US
To: support@example.com
From: Dmitry <dmitry@example.org>
Subject: Monthly export
Content-Type: multipart/mixed; boundary="------------Xy8Qm2Lp0Zr4Tn6Vb1Cd3Ef5"

This is a multi-part message in MIME format.
--------------Xy8Qm2Lp0Zr4Tn6Vb1Cd3Ef5
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Hi,

the export for November is attached. Lines that are long get 
soft-wrapped by format=flowed.

--------------Xy8Qm2Lp0Zr4Tn6Vb1Cd3Ef5
Content-Type: text/csv; charset=UTF-8; name*=UTF-8''%s
Content-Disposition: attachment; filename*=UTF-8''%s
Content-Transfer-Encoding: base64

%s

--------------Xy8Qm2Lp0Zr4Tn6Vb1Cd3Ef5--
`, pct([]byte("выгрузка ноябрь.csv")), pct([]byte("выгрузка ноябрь.csv")),
		b64([]byte("id;name;amount\n1;Иванов;100\n2;Петров;250\n"))))

	longName := "Очень длинное название отчёта за третий квартал 2026 года (финальная версия).pdf"
	enc := pct([]byte(longName))
	add("thunderbird-rfc2231-continuations", true, f(`
Message-ID: <b1c2d3e4-0000-1111-2222-333344445555@example.org>
Date: Sat, 21 Nov 2026 09:10:11 +0300
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
To: support@example.com
From: =?UTF-8?B?0J7Qu9GM0LPQsA==?= <olga@example.org>
Subject: =?UTF-8?B?0J7RgtGH0ZHRgiDQt9CwIDMg0LrQstCw0YDRgtCw0Ls=?=
Content-Type: multipart/mixed; boundary="------------TB2231"

--------------TB2231
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Отчёт во вложении.

--------------TB2231
Content-Type: application/pdf;
 name*0*=UTF-8''%s;
 name*1*=%s;
 name*2*=%s
Content-Disposition: attachment;
 filename*0*=UTF-8''%s;
 filename*1*=%s;
 filename*2*=%s
Content-Transfer-Encoding: base64

%s
--------------TB2231--
`, enc[:60], enc[60:150], enc[150:], enc[:60], enc[60:150], enc[150:], b64(pdf)))

	add("apple-mail-related", true, f(`
From: Sam Appleseed <sam@icloud.example>
Content-Type: multipart/alternative;
	boundary="Apple-Mail=_8C1D2E3F-4A5B-6C7D-8E9F-0A1B2C3D4E5F"
Mime-Version: 1.0 (Mac OS X Mail 16.0 \(3774.600.62\))
Subject: Photo from the trip
Date: Sun, 22 Nov 2026 18:45:10 -0800
Message-Id: <A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF@icloud.example>
To: Support <support@example.com>
X-Mailer: Apple Mail (2.3774.600.62)

--Apple-Mail=_8C1D2E3F-4A5B-6C7D-8E9F-0A1B2C3D4E5F
Content-Transfer-Encoding: 7bit
Content-Type: text/plain;
	charset=us-ascii

Here is the photo.


--Apple-Mail=_8C1D2E3F-4A5B-6C7D-8E9F-0A1B2C3D4E5F
Content-Type: multipart/related;
	type="text/html";
	boundary="Apple-Mail=_11223344-5566-7788-99AA-BBCCDDEEFF00"

--Apple-Mail=_11223344-5566-7788-99AA-BBCCDDEEFF00
Content-Transfer-Encoding: 7bit
Content-Type: text/html;
	charset=us-ascii

<html><head></head><body>Here is the photo.<br><img apple-inline="yes" src="cid:9F8E7D6C-5B4A@home"></body></html>
--Apple-Mail=_11223344-5566-7788-99AA-BBCCDDEEFF00
Content-Transfer-Encoding: base64
Content-Disposition: inline;
	filename=IMG_0042.jpeg
Content-Type: image/jpeg;
	x-unix-mode=0644;
	name="IMG_0042.jpeg"
Content-Id: <9F8E7D6C-5B4A@home>

%s
--Apple-Mail=_11223344-5566-7788-99AA-BBCCDDEEFF00--

--Apple-Mail=_8C1D2E3F-4A5B-6C7D-8E9F-0A1B2C3D4E5F--
`, b64(jpegish)))

	add("apple-mail-text-image-text", false, f(`
From: Sam Appleseed <sam@icloud.example>
Content-Type: multipart/mixed;
	boundary="Apple-Mail=_MIXED"
Mime-Version: 1.0 (Mac OS X Mail 16.0)
Subject: Two screenshots
Date: Sun, 22 Nov 2026 19:00:00 -0800
Message-Id: <MIXED-1@icloud.example>
To: Support <support@example.com>

--Apple-Mail=_MIXED
Content-Transfer-Encoding: 7bit
Content-Type: text/plain;
	charset=us-ascii

Before the screenshot.

--Apple-Mail=_MIXED
Content-Disposition: inline;
	filename=screen.png
Content-Type: image/png;
	name="screen.png"
Content-Transfer-Encoding: base64

%s
--Apple-Mail=_MIXED
Content-Transfer-Encoding: 7bit
Content-Type: text/plain;
	charset=us-ascii


After the screenshot.
--Apple-Mail=_MIXED--
`, b64(png1x1)))

	add("list-mailman-footer", true, `
Return-Path: <golang-nuts-bounces@lists.example.org>
Received: from lists.example.org (lists.example.org [192.0.2.10])
	by mx.example.com (Postfix) with ESMTP id 4Zx1y2z3
	for <support@example.com>; Mon, 16 Nov 2026 07:00:01 +0000 (UTC)
Received: from sender.example.net (sender.example.net [198.51.100.7])
	by lists.example.org (Postfix) with ESMTP id 1A2B3C
	for <golang-nuts@lists.example.org>; Mon, 16 Nov 2026 06:59:58 +0000 (UTC)
From: Rob <rob@example.net>
To: golang-nuts@lists.example.org
Subject: [golang-nuts] Re: generics and iterators
Date: Mon, 16 Nov 2026 06:59:50 +0000
Message-ID: <reply-77@example.net>
In-Reply-To: <question-76@example.org>
References: <question-76@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="===============1234567890=="
List-Id: Go language discussion <golang-nuts.lists.example.org>
List-Unsubscribe: <https://lists.example.org/mailman/options/golang-nuts>,
 <mailto:golang-nuts-request@lists.example.org?subject=unsubscribe>
List-Archive: <https://lists.example.org/pipermail/golang-nuts/>
List-Post: <mailto:golang-nuts@lists.example.org>
List-Help: <mailto:golang-nuts-request@lists.example.org?subject=help>
List-Subscribe: <https://lists.example.org/mailman/listinfo/golang-nuts>,
 <mailto:golang-nuts-request@lists.example.org?subject=subscribe>
Precedence: list
Errors-To: golang-nuts-bounces@lists.example.org
Sender: "golang-nuts" <golang-nuts-bounces@lists.example.org>

--===============1234567890==
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit

Use iter.Seq; it composes well.

--===============1234567890==
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: inline

_______________________________________________
golang-nuts mailing list
golang-nuts@lists.example.org
https://lists.example.org/mailman/listinfo/golang-nuts

--===============1234567890==--
`)

	add("list-google-groups", false, `
X-Received: by 2002:a05:622a:1a8e:b0:4e1:2f3a:4b5c with SMTP id s14mr123456qtc.5.1700000000000;
        Tue, 17 Nov 2026 03:04:05 -0800 (PST)
X-Received: by 2002:a05:622a:1a8e:b0:4e1:2f3a:4b5c with SMTP id s14mr654321qtc.5.1700000000001;
        Tue, 17 Nov 2026 03:04:06 -0800 (PST)
Date: Tue, 17 Nov 2026 03:04:04 -0800 (PST)
From: Grace <grace@example.com>
To: dev-announce <dev-announce@googlegroups.example>
Cc: dev <dev@googlegroups.example>, ops@example.com
Reply-To: dev-announce@googlegroups.example
Message-Id: <e1f2a3b4-c5d6-7e8f-9a0b-c1d2e3f4a5b6n@googlegroups.example>
Subject: [dev-announce] Release 1.4 is out
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable
X-Original-Sender: grace@example.com
Mailing-list: list dev-announce@googlegroups.example; contact dev-announce+owners@googlegroups.example
List-ID: <dev-announce.googlegroups.example>
X-Google-Group-Id: 123456789012
List-Post: <https://groups.google.example/group/dev-announce/post>, <mailto:dev-announce@googlegroups.example>
List-Help: <https://support.google.example/>, <mailto:dev-announce+help@googlegroups.example>
List-Archive: <https://groups.google.example/group/dev-announce/>
List-Unsubscribe: <mailto:googlegroups-manage+123456789012+unsubscribe@googlegroups.example>,
 <https://groups.google.example/group/dev-announce/subscribe>
Precedence: list

Release 1.4 is out. Highlights: faster start=2C smaller binary.=0A=
See the notes at https://example.com/notes/1.4 =E2=80=94 thanks all!
`)

	add("dsn-postfix-bounce", true, `
Return-Path: <>
Received: by mx.example.com (Postfix) id 9F1E2D3C; Tue, 24 Nov 2026 12:00:05 +0000 (UTC)
Date: Tue, 24 Nov 2026 12:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: support@example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="9F1E2D3C.1700000005/mx.example.com"
Message-Id: <20261124120005.9F1E2D3C@mx.example.com>

This is a MIME-encapsulated message.

--9F1E2D3C.1700000005/mx.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@nowhere.example>: host nowhere.example[203.0.113.5] said: 550 5.1.1
    User unknown (in reply to RCPT TO command)

--9F1E2D3C.1700000005/mx.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
X-Postfix-Queue-ID: 9F1E2D3C
Arrival-Date: Tue, 24 Nov 2026 12:00:01 +0000 (UTC)

Final-Recipient: rfc822; nobody@nowhere.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--9F1E2D3C.1700000005/mx.example.com
Content-Description: Undelivered Message
Content-Type: message/rfc822

Received: by mx.example.com (Postfix, from userid 1000) id 1A2B3C4D; Tue, 24 Nov 2026 12:00:00 +0000 (UTC)
From: Support <support@example.com>
To: nobody@nowhere.example
Subject: Your ticket #42
Date: Tue, 24 Nov 2026 12:00:00 +0000
Message-Id: <ticket-42@example.com>

We have received your request.

--9F1E2D3C.1700000005/mx.example.com--
`)

	add("dsn-exchange-headers-only", true, `
From: Microsoft Outlook <postmaster@example.onmicrosoft.com>
To: <support@example.com>
Date: Tue, 24 Nov 2026 13:00:00 +0000
Content-Type: multipart/report; report-type=delivery-status;
	boundary="f1e2d3c4-b5a6-9788-1234-56789abcdef0"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <ndr-1@example.onmicrosoft.com>
In-Reply-To: <ticket-43@example.com>
References: <ticket-43@example.com>
Subject: Undeliverable: Your ticket #43
MIME-Version: 1.0

--f1e2d3c4-b5a6-9788-1234-56789abcdef0
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="b1a2c3d4-0000-4000-8000-000000000001"

--b1a2c3d4-0000-4000-8000-000000000001
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Delivery has failed to these recipients or groups:

gone@example.net
The email address you entered couldn't be found.

--b1a2c3d4-0000-4000-8000-000000000001
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Delivery has failed to these recipients or groups:</p><p>gone@=
example.net</p></body></html>

--b1a2c3d4-0000-4000-8000-000000000001--

--f1e2d3c4-b5a6-9788-1234-56789abcdef0
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com
Received-From-MTA: dns;example.com
Arrival-Date: Tue, 24 Nov 2026 12:59:58 +0000

Original-Recipient: rfc822;gone@example.net
Final-Recipient: rfc822;gone@example.net
Action: failed
Status: 5.1.10

--f1e2d3c4-b5a6-9788-1234-56789abcdef0
Content-Type: text/rfc822-headers

From: Support <support@example.com>
To: gone@example.net
Subject: Your ticket #43
Message-ID: <ticket-43@example.com>

--f1e2d3c4-b5a6-9788-1234-56789abcdef0--
`)

	add("calendar-google-invite", true, f(`
MIME-Version: 1.0
Date: Wed, 25 Nov 2026 12:00:00 +0000
Reply-To: Alice Example <alice@example.com>
Sender: Google Calendar <calendar-notification@google.example>
Message-ID: <calendar-7kq2o1d4@google.example>
Subject: Invitation: Quarterly review @ Tue Dec 1, 2026 10am - 11am (GMT) (support@example.com)
From: Alice Example <alice@example.com>
To: support@example.com
Content-Type: multipart/mixed; boundary="000000000000cal0mixed"

--000000000000cal0mixed
Content-Type: multipart/alternative; boundary="000000000000cal0alt"

--000000000000cal0alt
Content-Type: text/plain; charset="UTF-8"; format=flowed; delsp=yes
Content-Transfer-Encoding: base64

%s
--000000000000cal0alt
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<p>You have been invited to <b>Quarterly review</b>.</p>
--000000000000cal0alt
Content-Type: text/calendar; charset="UTF-8"; method=REQUEST
Content-Transfer-Encoding: 7bit

%s
--000000000000cal0alt--

--000000000000cal0mixed
Content-Type: application/ics; name="invite.ics"
Content-Disposition: attachment; filename="invite.ics"
Content-Transfer-Encoding: base64

%s
--000000000000cal0mixed--
`, b64([]byte("You have been invited to the following event.\n\nQuarterly review\nTue Dec 1, 2026 10am – 11am (GMT)\n")),
		strings.TrimSuffix(ics, "\n"), b64([]byte(ics))))

	add("calendar-outlook-cancel", false, f(`
From: Organizer <organizer@example.com>
To: Support <support@example.com>
Subject: Canceled: Weekly sync
Thread-Topic: Weekly sync
Date: Thu, 26 Nov 2026 08:00:00 +0000
Message-ID: <cancel-1@example.com>
MIME-Version: 1.0
Content-Type: text/calendar; charset="utf-8"; method=CANCEL
Content-Transfer-Encoding: base64

%s
`, b64([]byte(strings.ReplaceAll(strings.ReplaceAll(ics, "REQUEST", "CANCEL"), "STATUS:CONFIRMED", "STATUS:CANCELLED")))))

	add("ru-windows-1251-8bit", true, `
From: `+word("windows-1251", in(charmap.Windows1251, "Иван Петров"))+` <ivan@example.ru>
To: `+word("windows-1251", in(charmap.Windows1251, "Служба поддержки"))+` <support@example.com>
Subject: `+word("windows-1251", in(charmap.Windows1251, "Заявка #42"))+`
Date: Wed, 25 Nov 2026 21:59:58 +0300
Message-ID: <abc@example.org>
X-Mailer: The Bat! (v9.4.5) Professional
MIME-Version: 1.0
Content-Type: text/plain; charset=windows-1251
Content-Transfer-Encoding: 8bit

`+string(in(charmap.Windows1251, ru)))

	add("ru-koi8r-qp", false, `
From: `+qword("koi8-r", in(charmap.KOI8R, "Мария"))+` <maria@example.ru>
To: support@example.com
Subject: `+qword("koi8-r", in(charmap.KOI8R, "Не работает вход"))+`
Date: 25 Nov 2026 10:00:00 +0300
Message-ID: <koi8@example.ru>
MIME-Version: 1.0
Content-Type: text/plain; charset="koi8-r"
Content-Transfer-Encoding: quoted-printable

`+qp(in(charmap.KOI8R, "Добрый день!\nНе могу войти в личный кабинет.\n")))

	subj := []byte("Счёт на оплату №17 от 25.11.2026")
	add("ru-utf8-split-words-1251-filename", true, f(`
From: =?UTF-8?B?0JHRg9GF0LPQsNC70YLQtdGA0LjRjw==?= <buh@example.ru>
To: support@example.com
Subject: %s
 %s
Date: Wed, 25 Nov 2026 12:00:00 +0300
Message-ID: <split@example.ru>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

%s
--b1
Content-Type: application/pdf
Content-Disposition: attachment; filename*=windows-1251''%s
Content-Transfer-Encoding: base64

%s
--b1--
`, word("UTF-8", subj[:20]), word("UTF-8", subj[20:]),
		b64([]byte("<p>Счёт во вложении.</p>")), pct(in(charmap.Windows1251, "Счёт №17.pdf")), b64(pdf)))

	add("ru-8bit-raw-headers", false, `
From: `+string(in(charmap.Windows1251, "Пётр Сидоров"))+` <petr@example.ru>
To: support@example.com
Subject: `+string(in(charmap.Windows1251, "Вопрос по договору"))+`
Date: Tue, 24 Nov 2026 15:00:00 +0300
Message-ID: <raw8bit@example.ru>
MIME-Version: 1.0
Content-Type: text/plain; charset=windows-1251
Content-Transfer-Encoding: 8bit

`+string(in(charmap.Windows1251, "Когда будет готов договор?\n")))

	add("cjk-gb2312", true, f(`
From: %s <li@example.cn>
To: support@example.com
Subject: %s
Date: Wed, 25 Nov 2026 18:00:00 +0800
Message-ID: <gb2312@example.cn>
MIME-Version: 1.0
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64

%s
`, word("gb2312", in(simplifiedchinese.GBK, "李明")), word("gb2312", in(simplifiedchinese.GBK, "关于订单的问题")),
		b64(in(simplifiedchinese.GBK, "您好，我的订单还没有收到。\n谢谢！\n"))))

	add("cjk-shift-jis", true, f(`
From: %s <tanaka@example.jp>
To: support@example.com
Subject: %s
Date: Wed, 25 Nov 2026 19:00:00 +0900
Message-ID: <sjis@example.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset=Shift_JIS
Content-Transfer-Encoding: 8bit

%s`, word("Shift_JIS", in(japanese.ShiftJIS, "田中太郎")), word("Shift_JIS", in(japanese.ShiftJIS, "お問い合わせ")),
		in(japanese.ShiftJIS, "お世話になっております。\n請求書を送付いたします。\n")))

	add("cjk-iso-2022-jp", false, f(`
From: %s <suzuki@example.jp>
To: support@example.com
Subject: %s
Date: Wed, 25 Nov 2026 20:00:00 +0900
Message-ID: <jis@example.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-2022-JP
Content-Transfer-Encoding: 7bit

%s`, word("ISO-2022-JP", in(japanese.ISO2022JP, "鈴木")), word("ISO-2022-JP", in(japanese.ISO2022JP, "会議の件")),
		in(japanese.ISO2022JP, "明日の会議は十時からです。\n")))

	add("cjk-big5", true, f(`
From: %s <chen@example.tw>
To: support@example.com
Subject: %s
Date: Wed, 25 Nov 2026 17:00:00 +0800
Message-ID: <big5@example.tw>
MIME-Version: 1.0
Content-Type: text/plain; charset="big5"
Content-Transfer-Encoding: quoted-printable

%s`, word("big5", in(traditionalchinese.Big5, "陳大文")), word("big5", in(traditionalchinese.Big5, "發票問題")),
		qp(in(traditionalchinese.Big5, "請問發票何時寄出？\n"))))

	add("forwarded-rfc822", false, `
From: Dmitry <dmitry@example.org>
To: support@example.com
Subject: Fwd: Quarterly report
Date: Fri, 20 Nov 2026 15:00:00 +0300
Message-ID: <fwd-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="------------FWD"

--------------FWD
Content-Type: text/plain; charset=UTF-8

See the forwarded message.

--------------FWD
Content-Type: message/rfc822
Content-Disposition: inline

From: Finance <finance@example.org>
To: dmitry@example.org
Subject: =?UTF-8?Q?Quarterly_report_Q3/2026?=
Date: Thu, 19 Nov 2026 10:00:00 +0300
Message-ID: <q3@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: text/plain; charset=UTF-8

Numbers attached.

--inner
Content-Type: application/pdf; name="q3.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJSVFT0YK
--inner--

--------------FWD--
`)

	add("forwarded-rfc822-no-subject", true, `
From: Dmitry <dmitry@example.org>
To: support@example.com
Subject: Fwd:
Date: Fri, 20 Nov 2026 15:05:00 +0300
Message-ID: <fwd-2@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="FWD2"

--FWD2
Content-Type: application/pdf; name="first.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJSVFT0YK
--FWD2
Content-Type: message/rfc822

From: someone@example.org
To: dmitry@example.org
Date: Thu, 19 Nov 2026 10:00:00 +0300

No subject here.
--FWD2--
`)

	add("smime-signed", true, f(`
From: Secure Sender <secure@example.com>
To: support@example.com
Subject: Signed contract
Date: Mon, 23 Nov 2026 10:00:00 +0100
Message-ID: <signed-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;
	boundary="----SIGNED0123456789"

This is an S/MIME signed message

------SIGNED0123456789
Content-Type: multipart/alternative; boundary="ALT0123"

--ALT0123
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 7bit

The signed contract text.

--ALT0123
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: 7bit

<p>The signed contract text.</p>

--ALT0123--

------SIGNED0123456789
Content-Type: application/pkcs7-signature; name="smime.p7s"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7s"
Content-Description: S/MIME Cryptographic Signature

%s

------SIGNED0123456789--
`, b64(append([]byte("\x30\x82\x06\x3a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"), random(400, 7)...))))

	add("smime-encrypted", false, f(`
From: Secure Sender <secure@example.com>
To: support@example.com
Subject: Encrypted
Date: Mon, 23 Nov 2026 10:05:00 +0100
Message-ID: <enc-1@example.com>
MIME-Version: 1.0
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7m"

%s
`, b64(append([]byte("\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03"), random(300, 8)...))))

	add("pgp-signed", false, `
From: Pat <pat@example.org>
To: support@example.com
Subject: PGP signed note
Date: Mon, 23 Nov 2026 11:00:00 +0000
Message-ID: <pgp-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/signed; micalg=pgp-sha256;
 protocol="application/pgp-signature";
 boundary="------------PGPSIG"

This is an OpenPGP/MIME signed message (RFC 4880 and 3156)
--------------PGPSIG
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

Signed note.
--------------PGPSIG
Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"
Content-Description: OpenPGP digital signature
Content-Disposition: attachment; filename="OpenPGP_signature.asc"

-----BEGIN PGP SIGNATURE-----

wnsEABYIACMWIQTfakefakefakefakefakefakefakeBQJnAAAAAAKCRD
=abcd
-----END PGP SIGNATURE-----

--------------PGPSIG--
`)

	add("multipart-digest", false, `
From: digest@lists.example.org
To: support@example.com
Subject: Weekly digest, Vol 12, Issue 3
Date: Mon, 16 Nov 2026 00:00:00 +0000
Message-ID: <digest-12-3@lists.example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="DIGEST-OUTER"

--DIGEST-OUTER
Content-Type: text/plain

Today's topics: 1. Hello 2. Bye

--DIGEST-OUTER
Content-Type: multipart/digest; boundary="DIGEST"

--DIGEST

From: a@example.org
Subject: Hello
Date: Sun, 15 Nov 2026 10:00:00 +0000

Hello all.

--DIGEST

From: b@example.org
Subject: Bye
Date: Sun, 15 Nov 2026 11:00:00 +0000

Bye all.

--DIGEST--

--DIGEST-OUTER--
`)

	add("large-attachment-sink", true, f(`
From: Backup <backup@example.com>
To: support@example.com
Subject: Nightly backup
Date: Tue, 24 Nov 2026 02:00:00 +0000
Message-ID: <backup-1124@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BK"

--BK
Content-Type: text/plain

Backup attached (20000 bytes).
--BK
Content-Type: application/zip; name="backup.zip"
Content-Disposition: attachment; filename="backup.zip"
Content-Transfer-Encoding: base64

%s
--BK--
`, b64(random(20000, 9))))

	add("generated-names", true, f(`
From: Scanner <scanner@example.com>
To: support@example.com
Subject: Scan
Date: Tue, 24 Nov 2026 09:00:00 +0000
Message-ID: <scan@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="SCAN"

--SCAN
Content-Type: application/pdf
Content-Transfer-Encoding: base64

%s
--SCAN
Content-Type: image/png
Content-Transfer-Encoding: base64

%s
--SCAN
Content-Type: application/x-mailbus-unknown
Content-Transfer-Encoding: base64

AAECAwQ=
--SCAN
Content-Type: text/plain; name="../../etc/passwd"
Content-Disposition: attachment; filename="C:\Users\scan\..\notes.TXT"

not really a password file
--SCAN
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="report v1.2 final"

payload
--SCAN
Content-Type: application/octet-stream
Content-Disposition: attachment; filename=""

--SCAN--
`, b64(pdf), b64(png1x1)))

	add("groups-undisclosed", false, `
From: Announcements <news@example.com>
To: undisclosed-recipients:;
Cc: Team: anna@example.com, "Boris B." <boris@example.com>;, outside@example.net
Bcc: Empty Group:;
Subject: Groups
Date: Tue, 24 Nov 2026 09:30:00 +0000
Message-ID: <groups@example.com>

Group addresses.
`)

	add("references-thread", true, `
From: Ann <ann@example.com>
To: Support <support@example.com>
Subject: Re: Re: Ticket #42 - printer
Date: Tue, 24 Nov 2026 10:30:00 +0000
Message-ID:
 <reply-3@example.com>
In-Reply-To: <reply-2@example.com> (Support's message of "Tue, 24 Nov 2026 10:00:00 +0000")
References: <ticket-42@example.com>
 <reply-1@example.com>
	<reply-2@example.com>
X-Ticket-Id: 42
x-ticket-id: 42-dup
X-Priority: 3 (Normal)
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Still broken.

> Have you tried turning it off and on again?
`)

	add("header-only", false, `
From: ping@example.com
To: support@example.com
Subject: ping
Date: Tue, 24 Nov 2026 11:00:00 +0000`)

	add("empty-body", true, `
From: empty@example.com
To: support@example.com
Subject:
Date: Tue, 24 Nov 2026 11:05:00 +0000
Message-ID: <empty@example.com>
MIME-Version: 1.0
Content-Type: text/plain

`)

	good := b64(pdf)
	add("broken-base64", true, f(`
From: broken@example.com
To: support@example.com
Subject: Broken base64
Date: Tue, 24 Nov 2026 11:10:00 +0000
Message-ID: <b64@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B64"

--B64
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

SGVsbG8s!!IHdvcmxkIQ==SGVsbG8gYWdhaW4=
--B64
Content-Type: application/pdf; name="broken.pdf"
Content-Transfer-Encoding: base64

%s***%s
--B64--
`, good[:40], good[40:]))

	add("unknown-charset", false, `
From: =?x-unknown?Q?Odd_Name?= <odd@example.com>
To: support@example.com
Subject: =?x-mac-klingon?B?SGVsbG8=?= world
Date: Tue, 24 Nov 2026 11:15:00 +0000
Message-ID: <charset@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="x-foo"
Content-Transfer-Encoding: 8bit

Caf`+"\xe9"+` au lait, `+"\xc3\xa9"+` ok.
`)

	add("missing-boundary", true, `
From: noboundary@example.com
To: support@example.com
Subject: Missing boundary parameter
Date: Tue, 24 Nov 2026 11:20:00 +0000
Message-ID: <nob@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed

--abc
Content-Type: text/plain

Text that was meant as a part.
--abc--
`)

	add("boundary-not-found", false, `
From: wrongboundary@example.com
To: support@example.com
Subject: Boundary not in body
Date: Tue, 24 Nov 2026 11:25:00 +0000
Message-ID: <wrongb@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="expected"

--actual
Content-Type: text/plain

The body uses another boundary.
--actual--
`)

	add("truncated-multipart", true, f(`
From: cut@example.com
To: support@example.com
Subject: Truncated in transit
Date: Tue, 24 Nov 2026 11:30:00 +0000
Message-ID: <cut@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="CUT"

--CUT
Content-Type: text/plain

The attachment below is cut.
--CUT
Content-Type: application/pdf; name="cut.pdf"
Content-Transfer-Encoding: base64

%s`, good[:60]))

	add("garbage-date", false, `
From: dates@example.com
To: support@example.com
Subject: Garbage date
Date: yesterday at noon, more or less
Message-ID: <garbage-date@example.com>

Body.
`)

	add("no-date", true, `
From: nodate@example.com
To: support@example.com
Subject: No date
Message-ID: <no-date@example.com>

Body.
`)

	add("bad-address-list", false, `
From: not an address at all
To: Smith, John <john.smith@example.com>, "Unterminated <u@example.com>, jane@example.com
Cc: ,,
Reply-To: <reply@example.com
Subject: Bad addresses
Date: Tue, 24 Nov 2026 11:40:00 +0000
Message-ID: <badaddr@example.com>

Body.
`)

	add("utf8-raw-headers", true, `
From: Žofie Nováková <zofie@example.cz>
To: Účetní <ucetni@example.cz>
Subject: Fakturace – říjen
Date: Tue, 24 Nov 2026 11:45:00 +0100
Message-ID: <utf8raw@example.cz>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Dobrý den, posílám fakturu.
`)

	add("broken-qp", false, `
From: qp@example.com
To: support@example.com
Subject: Broken quoted-printable
Date: Tue, 24 Nov 2026 11:50:00 +0000
Message-ID: <qp@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Price =3D 10 =ZZ euros, 50% =3d off, soft=
 break and a lone = sign.
`+strings.Repeat("x", 5000)+`=
end=C3=A9
`)

	add("lf-legacy-date-zones", false, `
From: old@example.com
To: support@example.com
Subject: Old mailer
Date: 24 Nov 2026 06:00:00 EDT
Message-ID: <old@example.com>

Old style date with a named zone.
`)

	add("date-ut-no-weekday", true, `
From: old@example.com
To: support@example.com
Subject: UT date
Date: 1 Dec 2026 10:00:00 UT
Message-ID: <ut@example.com>

UT zone.
`)

	add("mbox-from-line", false, `
From sender@example.com Tue Nov 24 12:00:00 2026
From: Sender <sender@example.com>
To: support@example.com
Subject: Came from an mbox
Date: Tue, 24 Nov 2026 12:00:00 +0000
Message-ID: <mbox@example.com>

Body after an mbox From_ line.
`)

	add("header-no-blank-line", true, `
From: rushed@example.com
To: support@example.com
Subject: No blank line
Date: Tue, 24 Nov 2026 12:05:00 +0000
This line is the body, but there was no blank line.
Second body line.
`)

	add("nested-deep", true, f(`
From: Nested <nested@example.com>
To: support@example.com
Subject: Nested structure
Date: Tue, 24 Nov 2026 12:10:00 +0000
Message-ID: <nested@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="L1"

--L1
Content-Type: multipart/related; boundary="L2"

--L2
Content-Type: multipart/alternative; boundary="L3"

--L3
Content-Type: text/plain; charset=utf-8

Plain part.
--L3
Content-Type: text/html; charset=utf-8

<p>HTML part <img src="cid:logo@x"></p>
--L3--
--L2
Content-Type: image/gif
Content-ID: <logo@x>
Content-Transfer-Encoding: base64

R0lGODlhAQABAAAAACw=
--L2--
--L1
Content-Type: multipart/mixed; boundary="L2b"

--L2b
Content-Type: application/pdf; name="a.pdf"
Content-Transfer-Encoding: base64

%s
--L2b
Content-Type: text/html; name="page.html"

<p>an attached page</p>
--L2b--
--L1--
`, b64(pdf)))

	add("html-only-latin1", false, `
From: shop@example.fr
To: support@example.com
Subject: =?iso-8859-1?Q?Votre_commande_est_exp=E9di=E9e?=
Date: Tue, 24 Nov 2026 12:15:00 +0100
Message-ID: <html-only@example.fr>
MIME-Version: 1.0
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<html><body><p>Votre commande a =E9t=E9 exp=E9di=E9e.</p></body></html>
`)

	add("unknown-transfer-encoding", true, `
From: uu@example.com
To: support@example.com
Subject: Unknown transfer encoding
Date: Tue, 24 Nov 2026 12:20:00 +0000
Message-ID: <uu@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="UU"

--UU
Content-Type: text/plain

See attachment.
--UU
Content-Type: application/octet-stream; name="file.bin"
Content-Transfer-Encoding: x-uuencode

begin 644 file.bin
#86)C
end
--UU--
`)

	add("attribute-sources", true, `
From: Ticket Bot <bot@tickets.example.com>
To: support@example.com
Subject: [ticket #1234] Printer on fire
Date: Tue, 24 Nov 2026 12:25:00 +0000
Message-ID: <attr@tickets.example.com>
X-Ticket-Id: T-1234
X-Customer: =?utf-8?Q?Acme_Gro=C3=9Fhandel?=
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Order number: ORD-98765
Priority: high
`)

	add("8bit-multipart-bad-ctype", false, `
From: misc@example.com
To: support@example.com
Subject: Odd content types
Date: Tue, 24 Nov 2026 12:30:00 +0000
Message-ID: <ctype@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=simple; boundary=dup

--simple
Content-Type: text/plain; charset=utf-8; format=flowed; format=fixed

Duplicate params.
--simple
Content-Type: garbage
Content-Disposition: attachment; filename=unquoted name.txt

weird type
--simple--
`)
	return ms
}
