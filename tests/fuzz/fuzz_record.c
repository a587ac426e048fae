/* libFuzzer target: storage_record_parse on arbitrary bytes (a stored record
 * read back from a possibly damaged disk). */
#include "../../storage/storage.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct storage_record r;
    if (storage_record_parse(data, size, &r) == 0) {
        /* What parsed must lie inside the input. */
        if (r.key < data || r.key + r.key_len > data + size ||
            r.value + r.value_len != data + size)
            abort();
    }
    return 0;
}
