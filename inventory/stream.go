package inventory

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"unicode/utf8"
)

// A daemon reloads its inventory while the running one answers. Read
// whole, the text of 100,000 mailboxes (18 MiB) stays alive beside the
// running tables until its last domain is decoded, at the top of the
// reload's peak. So Load reads the file as a stream: the cut of
// splitDomains is made line by line as the text comes, each domain item is
// copied out on its own and decoded on every core as soon as it is
// complete, and its text is dropped once decoded. Only the items in flight
// are held, never the whole file. A document the cut refuses (or a chunk
// that does not stand alone) is read again whole and takes the path of
// Parse: the same inventory and the same problems either way.

// loadStream loads the inventory read from r, which names file. It returns
// errChunk when the document must be parsed whole, Problems when it is
// wrong, and r's error when r fails.
func loadStream(r io.Reader, file string, o LoadOptions) (*Inventory, error) {
	dec := newDecoder(file, o.Keep, 0)
	var (
		sp    splitter
		head  []byte
		cur   []byte // the item being cut
		first int    // its first line
		cut   = true // the document can still be cut
		long  []byte // a line longer than the reader's buffer
		sum   = sha256.New()
		br    = bufio.NewReaderSize(r, 64<<10)
		rerr  error
	)
	send := func() {
		if cur != nil {
			dec.add(chunk{text: cur, line: first})
			cur = nil
		}
	}
	for cut {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			sum.Write(line)
			kind := sp.line(line)
			if kind == lineFail || bytes.ContainsAny(line, "&*\r\t") || !utf8.Valid(line) {
				cut = false
				break
			}
			switch kind {
			case lineHead:
				send()
			case lineItem:
				send()
				cur, first = append(make([]byte, 0, 2*len(line)), line...), sp.no
			case lineInItem:
				cur = append(cur, line...)
			}
			head = appendHead(head, line, kind)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	if cut && rerr == nil {
		send()
	}
	results, derr := dec.wait()
	if rerr != nil {
		return nil, rerr
	}
	if !cut || !sp.done() || derr != nil {
		return nil, errChunk
	}
	inv, err := parse(head, func() ([]domainResult, error) {
		r := results
		results = nil
		return r, nil
	}, file, o)
	if inv != nil {
		inv.Digest = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	}
	return inv, err
}
