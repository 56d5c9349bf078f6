#ifndef LACQUER_SOCKET_QUEUE_H
#define LACQUER_SOCKET_QUEUE_H

#include <stdint.h>

/// Room for what getsockopt(TCP_INFO) returns (Linux's struct tcp_info, which only grows):
/// zeroed before the call, so a field an older kernel does not fill reads as 0.
struct lacquer_tcp_info {
    uint64_t words[48];
};

/// The bytes the kernel still holds unsent in the socket's send queue (tcpi_notsent_bytes,
/// Linux >= 4.6), from what getsockopt(TCP_INFO) wrote into `info`; 0 when it did not say.
uint32_t lacquer_tcp_info_notsent_bytes(const struct lacquer_tcp_info *info);

#endif
