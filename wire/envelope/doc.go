// Package envelope is the wire format of prometheus-streams: the one message that
// scrape-once publishes per target scrape and drain consumes. It turns an Envelope
// into bytes and back, checking everything on the way in; it does not scrape,
// publish or push.
//
// # Layout
//
// A message is a fixed header, protobuf-wire fields, and a checksum:
//
//	offset  size  content
//	0       3     magic "PSE"
//	3       1     format version (Version, 1)
//	4       4     length of the whole message in bytes, uint32 little-endian
//	8       n     fields
//	8+n     4     CRC-32C (Castagnoli) of bytes [0, 8+n), uint32 little-endian
//
// The magic tells an envelope from anything else on the subject; the JSON messages of
// the earlier system get an error that says so. The version comes before anything
// that may change with it, so a drain names a newer format (ErrUnknownVersion)
// instead of calling it corrupt. The length makes truncation an error of its own
// (ErrTruncated) rather than a checksum mismatch, and would let envelopes be stored
// back to back. CRC-32C catches corruption anywhere, the header included, and is
// hardware-accelerated (SSE 4.2, ARMv8 CRC), so checking it is cheap next to
// decompression.
//
// The fields use the protobuf wire format, written and read by hand with protowire:
// no generated code, a well-known encoding (protoc --decode_raw reads the fields
// part) and the usual rules for evolving it:
//
//	  1 publisher     string    edge host identity
//	  2 site          string
//	  3 job           string
//	  4 instance      string
//	  5 label         message   repeated, sorted by name: 1 name string, 2 value string
//	  6 honor_labels  bool
//	  7 start_seconds sint64    Unix seconds; present iff Start is set
//	  8 start_nanos   uint32    0 to 999,999,999
//	  9 duration      sint64    nanoseconds
//	 10 error         string    "" when the scrape succeeded
//	 11 http_status   uint32    0 when there was no response
//	 12 content_type  string    media type of the body
//	 13 series        uint64
//	 14 compression   enum      Compression of the body: 0 none, 1 zstd, 2 zstd with dictionary DictionaryID
//	 15 raw_size      uint64    body length before compression; in a part, the whole body's
//	 16 body          bytes     the body, compressed as compression says; in a part, its chunk
//	 17 scrape_key    bytes     parts only: SHA-256 of the whole compressed body, 32 bytes
//	 18 part          uint32    0-based index of a part; 0 in a whole scrape
//	 19 parts         uint32    2 to MaxParts in a part; 0 or 1 in a whole scrape
//	 20 always_scrape_classic_histograms bool
//	 21 convert_classic_histograms_to_nhcb bool
//	 22 publisher_version string the publishing scrape-once's build version
//	 23 scrape_native_histograms bool
//	 99 signer        string    NKey user public key (U...) of the signing key
//	100 signature     bytes     ed25519, 64 bytes, the last field: see Signatures
//
// Encode writes the fields in number order and leaves out zero values, so equal
// envelopes encode to equal bytes. Decode accepts any order, refuses a known singular
// field twice, and skips unknown field numbers: a later build can add fields that old
// drains may safely ignore without a version bump. A change old drains would misread
// if they skipped it takes a new Version, which they then refuse by name.
//
// # Split scrapes
//
// A scrape whose message would outgrow the stream server's max payload (1 MB by
// default on NATS) is split by EncodeSplit into parts, each a message of this format
// that fits. The body is compressed once and the compressed bytes are cut into Parts
// chunks of equal length (the first ones a byte longer). Part i carries chunk i in the
// body field, the whole scrape's header (every other field, raw_size the whole body's),
// part i, parts K, and the scrape key: the SHA-256 of the whole compressed body. Each
// part is framed, checksummed and, by a signing Codec, signed on its own, so a drain
// checks each part as it comes, signature and trust included, and holds only parts it
// checked. EncodeSplit counts each part's header to the byte and takes the fewest
// parts that fit (TestEncodeSplitPlan checks that one fewer never does); it fails with
// ErrTooLarge when the size cannot hold a part's header and a byte of chunk, or when
// the scrape would take more than MaxParts (1024) parts. When the scrape fits one
// message, EncodeSplit returns the bytes Encode does; Encode itself refuses parts.
//
// Decode returns a part as a part: Part and Parts set, Chunk a copy of its chunk, Body
// nil; its frame, signature and header checked like any message's, and the whole
// body's declared size checked against MaxBodySize, with nothing decompressed. Join
// takes the K parts in any order; checks they belong together (SameScrape: every
// header field, the signer, the part count, compression, raw size and scrape key
// equal) and that each index is there once; joins the chunks; checks them against the
// scrape key, the one check over the whole compressed body, since a part's checksum
// and signature cover its own chunk and zstd's checksum is off; and decompresses them
// under Decode's limits. It returns the whole scrape, with Part 0 and Parts 1. Holding
// the parts until their scrape is complete, within a memory bound and a timeout, is
// drain/assemble's job.
//
// Split scrapes need no new version. Drains built before them (version 1 up to commit
// 5d872d7) check a message's frame, checksum, signature and header, then refuse any
// message whose part is not 0 or whose parts is above 1 with ErrUnsupported ("this
// build reads whole scrapes only, upgrade the drain"), before they look at the body,
// and they skip field 17 as unknown. Every part has parts of 2 or more, so such a drain
// refuses each part, saying why, and no chunk can ever pass for a whole scrape there
// (TestPartsRefusedByWholeOnlyDecoders pins the fields that ensure it; that commit's
// Decode was run on parts and refused every one so). Whole scrapes are unchanged on
// the wire, so old and new edges and drains read each other's whole scrapes.
//
// Splitting costs little (drain/assemble's BenchmarkLargeExposition: a 20 MB exposition
// of 330,000 series that zstd takes 11.8-fold down to 1.74 MB; medians of three 3 s
// runs on the shared 2-core VM under a load average of 8, so within some 5 %): at
// NATS's default 1 MB, 2 parts, whose EncodeSplit, Decodes, Reassembler.Add and Join
// take 1.05 times an Encode and Decode of one message (1.03 signed); at 64 KiB, 27
// parts, 1.04 times (1.08 signed). The edge's half costs what Encode does (1.00 to
// 1.05); the drain's 1.10 to 1.18 times Decode, for the chunks copied twice and
// hashed. The parts add 213 bytes to the one message at 1 MB (339 signed, 0.02 %) and
// 4,588 at 64 KiB (7,864 signed, 0.45 %).
//
// # Signatures
//
// A Codec made WithSigner signs every message with an NKey user key: ed25519, the keys
// NATS uses (`nk -gen user` makes one). The signer's public key goes in field 99 and
// the signature, last, in field 100: an ed25519 signature over bytes [0, start of the
// signature's tag), that is the header (the length included, which counts the
// signature: its size is fixed) and every other field, the signer's key included:
// everything a drain acts on. The CRC still covers the whole message, so corruption is
// still told from forgery: a flipped bit is ErrCorrupt, a change by someone who
// recomputed the CRC is ErrBadSignature. ed25519 is deterministic, so equal envelopes
// still encode to equal bytes. Signing adds 126 bytes to a message.
//
// Decode verifies a signature whenever there is one, over the bytes as received (not
// a re-encoding, so nothing the parser tolerates, such as field order or unknown
// fields, can change what was signed), before it checks the content or decompresses
// the body, and sets Envelope.Signer only when it verifies. A signature that does not
// verify, that is not 64 bytes, that any field follows, a signature without a signer
// key or a signer key without a signature, is ErrBadSignature: a *SignatureError that
// carries the claimed key and target for a log line. That holds whether or not the
// caller trusts any key, since no genuine publisher writes such a message. An unsigned
// message decodes with Signer "". Decode says who signed, not whether that key may
// publish this target: that policy is the drain's (drain's Trust), and it must
// refuse unsigned messages, since anyone can strip both fields off a signed one.
//
// Drains built before signing skip fields 99 and 100 as unknown fields and read
// signed messages as before: signing needs no new format version and no upgrade order.
//
// # Robustness
//
// Decode never panics, whatever it is given, and never lets a body take more memory
// than MaxBodySize. It checks the frame before the fields, and the declared raw body
// size against MaxBodySize before allocating or decompressing anything (ErrTooLarge).
// A zstd body's frame header must declare that same size, and the body is
// decompressed into a buffer of exactly that size which the decompressor may not grow
// (zstd.WithDecodeAllCapLimit), so a body that lies about its size fails there.
// Every Decode error wraps one of ErrNotEnvelope, ErrUnknownVersion, ErrTruncated,
// ErrCorrupt, ErrTooLarge, ErrUnsupported or ErrBadSignature. The tests truncate a real
// message at every length and flip every one of its bits, and flip every bit of a
// signed message with the CRC recomputed (none decodes); FuzzDecode also fuzzes the
// fields behind a valid checksum, which random bytes almost never get past, and
// FuzzDecodeSigned the fields behind a valid signature, both seeded with parts;
// FuzzJoin splits fuzzed bodies at fuzzed sizes, shuffles the parts and flips a bit of
// one with the CRC recomputed: Join fails with a sentinel or returns the scrape split.
//
// # Compression
//
// Bodies are compressed with zstd at SpeedDefault, chosen by BenchmarkCompression on
// the captures in tests/testdata. Figures for node_exporter.prom (57,537 bytes, 507
// series); medians of three 1 s runs on a shared 2-core Xeon VM, go1.26, so they are
// relative, not absolute. MB/s is of uncompressed bytes both ways:
//
//	codec                   ratio   compress MB/s   decompress MB/s
//	none                     1.00          39,700            38,700
//	gzip default (6)         5.88             199               424
//	gzip BestSpeed           5.25             370               365
//	zstd SpeedFastest        5.50             389             1,551
//	zstd SpeedDefault        5.73             342             1,398   <- used
//	zstd SpeedBetter         5.96             180             1,723
//	s2                       3.97           1,323             3,947
//	s2 better                4.33             461             3,758
//	snappy (s2)              3.97           1,332             3,776
//
// On a 10,007-series body built by fixture.Replicate (632,631 bytes) the ratios are
// zstd SpeedDefault 19.4, gzip default 14.9, s2 8.9.
//
// zstd is within 3% of gzip's ratio, compresses faster than gzip's default level, and
// decompresses 3 to 4 times faster,
// which is what matters at a drain reading a whole fleet. s2 and snappy are faster
// still but send about 45% more bytes; the edge-to-centre link and the streaming
// server's disk are scarcer than edge CPU, where 170 µs per scrape and interval is
// noise. SpeedFastest saves 12% of that CPU for 4% more bytes. SpeedBetterCompression
// gains 4% for twice the CPU and 25 MB of encoder tables (SpeedDefault: 3 MB), which
// a one-shot scrape-once allocates afresh every run (BenchmarkColdEncode: about 0.5 ms
// and 3.1 MB for NewCodec, the first Encode and Close). The compression is recorded
// per message, so the choice can change later without a new format version.
//
// CompressionZstdDict adds the embedded dictionary (DictionaryID; dict/README.md says
// what it holds and where from). BenchmarkDictionary measures it on the same captures,
// which are not in its corpus: compressed÷raw 0.129 for node_exporter.prom (plain zstd
// 0.174), 0.153 for prometheus.prom (0.167), 0.163 for pushgateway.prom (0.255). Its
// warm Encode of the node_exporter capture takes 0.8 to 1.6 times as long as plain
// zstd's across runs; the Push Gateway's about 2.7 times (the encoder resets its
// tables from the dictionary's on every Encode, some 35 µs), and a fresh encoder
// loads the dictionary once: 2.6 ms against 0.5 for the first Encode. With the
// dictionary, SpeedBetterCompression reaches 0.114 on node_exporter.prom for 6 times
// the warm CPU of plain zstd (9 times cold), and SpeedFastest 0.139 for 0.7 to 0.95
// times warm, 1.4 to 1.7 times cold. Only the last 32 or 64 KiB of the dictionary
// give 0.152 and 0.148 at SpeedDefault.
//
// On the same machine, BenchmarkEncode takes about 190 µs per node_exporter scrape
// (one allocation, 10,225 bytes on the wire) and BenchmarkDecode about 57 µs
// (four allocations): 8.6 million series/s on one core, 13.6 million on both
// (BenchmarkDecodeParallel).
//
// Signatures cost (BenchmarkSign, BenchmarkVerify, medians of three 1 s runs on the
// same machine): the ed25519 signature of a node_exporter message takes about 60 µs,
// 0.27 of the zstd Encode measured beside it (a signed Encode takes 1.16 times an
// unsigned one), and its verification about 70 µs, 0.37 of that Encode and as much as
// the whole unsigned Decode: a signed Decode takes 1.9 times as long (about 3.7
// million series/s on one core), which a drain reading a fleet should be sized for.
// Verification allocates 112 bytes (the signer's key), signing nothing beyond the
// message.
package envelope
