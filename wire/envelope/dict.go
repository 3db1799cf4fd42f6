package envelope

import (
	_ "embed"
	"fmt"
)

// DictionaryID is the zstd dictionary ID of the embedded exposition dictionary, as
// CompressionZstdDict bodies carry it in their frame header. It is in the range the zstd
// format leaves to private use (2^15 to 2^31-1). A dictionary of different content must
// get a new ID, and drains must learn it before any edge sends it.
const DictionaryID = 0x50530001

// dictionary is the content of the zstd dictionary DictionaryID names: the HELP, TYPE and
// series-name lines of common exporters' metric families, built by dict/build.go from
// the public expositions in dict/corpus.
//
//go:embed dict/exposition.dict
var dictionary []byte

// unknownDictionary is the error for a zstd body whose frame names a dictionary this
// build does not have.
func unknownDictionary(id uint32) error {
	return fmt.Errorf("%w: body: zstd dictionary %d is unknown; this build knows dictionary %d, upgrade the drain",
		ErrUnsupported, id, DictionaryID)
}
