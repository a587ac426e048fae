/* kvnode: essaim's daemon. See DESIGN §12 and `kvnode --help`. */
#include "node.h"

#include "../common/common.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    struct node_config cfg;
    char err[256] = "";
    config_defaults(&cfg);
    int rc = config_parse(&cfg, argc, argv, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc) {
        fprintf(stderr, "kvnode: %s (see kvnode --help)\n", err);
        return 2;
    }
    log_set_level((enum log_level)cfg.log_level);
    log_set_name(cfg.advertise);
    if (crypto_init() != 0) {
        log_error("libsodium failed to start");
        return 1;
    }
    rc = server_run(&cfg);
    return rc == 0 ? 0 : rc == KV_ERR_INVAL ? 2 : 1;
}
