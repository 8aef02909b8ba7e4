"""pyfaidx refuses to seek to a base that starts a 64 KiB BGZF block; FastaFile.fetch reads it."""

from mamba_bio_audio.data import SPECIES_DIR
from mamba_bio_audio.data.fasta import FastaFile


def test_fetch_at_bgzf_block_starts():
    fa = FastaFile(sorted(SPECIES_DIR.glob("*.fa.gz"))[0])
    raw = fa._open()
    name = fa.names[0]
    rec = raw.faidx.index[name]
    refused = 0
    for block in raw.faidx.gzi_index[1:40]:
        off = block.ustart - rec.offset  # byte offset of the block start inside the record
        start = (off // rec.lenb) * rec.lenc + min(off % rec.lenb, rec.lenc - 1)
        try:
            raw[name][start:start + 10]
        except ValueError:
            refused += 1
        got = fa.fetch(name, start, start + 10)
        assert len(got) == 10
        assert got[1:] == fa.fetch(name, start + 1, start + 10)
        assert got[:1] == fa.fetch(name, start - 1, start + 1)[1:]
    assert refused > 0  # the bundled files do have such positions
