// The kernel's own definition of struct tcp_info (uapi), read here so that Swift never
// restates its layout.
#include <linux/tcp.h>
#include <stddef.h>
#include <string.h>

#include "socket_queue.h"

_Static_assert(sizeof(struct tcp_info) <= sizeof(struct lacquer_tcp_info), "struct lacquer_tcp_info is too small");

uint32_t lacquer_tcp_info_notsent_bytes(const struct lacquer_tcp_info *info) {
    uint32_t notsent;
    memcpy(&notsent, (const char *)info + offsetof(struct tcp_info, tcpi_notsent_bytes), sizeof notsent);
    return notsent;
}
