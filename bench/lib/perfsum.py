#!/usr/bin/env python3
"""Group a flat `perf report --sort dso,symbol` listing into cost categories.

Usage: perfsum.py FLAT_REPORT.txt  (lines like "  1.23%  ringway  [.] symbol")
"""
import re
import sys

CATS = [
    # (category, kernel?, regex on symbol)
    ("kernel: io_uring plumbing", True, r"^(io_|__io_|io_uring)"),
    ("kernel: TCP/IP + loopback + softirq", True,
     r"(tcp|^ip_|^__ip|inet|skb|sock|^net_|napi|loopback|dev_queue|netif|process_backlog|"
     r"bbr|raw_local_deliver|softirq|__dev_|dst_|validate_xmit|sk_|csum|copy_.*iter|"
     r"datagram|rcv|xmit|neigh|eth_|lock_sock|release_sock|__check_object_size|"
     r"check_heap_object|__virt_addr_valid|memcg|refill_stock|mod_memcg)"),
    ("kernel: spinlock/irq-restore (VM sampling skew lands here)", True, r"(spin|irq|pv_queued)"),
    ("kernel: syscall entry/exit, scheduling, fd lookup", True,
     r"(syscall|entry_|fget|fdget|fput|schedule|switch|task|rcu|futex|wake|ret_from|"
     r"exit_to_user|syscall_exit|__x64_sys|do_syscall)"),
    ("kernel: slab/page allocation", True, r"(kmem|kmalloc|kfree|slab|alloc_pages|page|folio|__alloc|free)"),
    ("kernel: time", True, r"(tsc|clock|time|hrtimer|ktime)"),
    ("kernel: other", True, r".*"),
    ("user: crypto (aws-lc, libcrypto: AES-GCM, X25519, ECDSA, SHA)", False,
     r"(aws_lc|aes|gcm|ghash|sha256|sha512|sha384|ecp_nistz|x25519|fiat|bn_|ec_|EVP_|CRYPTO_|"
     r"OPENSSL_|ossl_|chacha|poly1305|libcrypto)"),
    ("user: rustls (record layer, handshake, buffers)", False, r"rustls"),
    ("user: HTTP parsing (httparse, ringway::http, memchr)", False, r"(httparse|ringway::http|memchr)"),
    ("user: timers + clock reads (monoio::time, clock_gettime)", False,
     r"(monoio::time|clock_gettime|Timespec|Instant|Sleep|Wheel|timeout)"),
    ("user: monoio task/waker/driver", False, r"(monoio::task|monoio::driver|monoio::runtime|waker|slab|monoio::)"),
    ("user: formatting (core::fmt: request id)", False, r"core::fmt|LowerHex|pad_integral|write_char|write_str"),
    ("user: hashing (SipHash in HashMap lookups)", False, r"(sip|hash|Hasher|BuildHasher)"),
    ("user: allocator (mimalloc)", False, r"(mi_|_mi_|malloc|free|alloc::)"),
    ("user: memcpy/memmove/memcmp", False, r"(memmove|memcpy|memcmp|memset)"),
    ("user: syscall wrappers (recv MSG_PEEK in is_quiet, ...)", False, r"(__libc_recv|recv|syscall|send)"),
    ("user: ringway dataplane and routing", False, r"ringway::"),
    ("user: other", False, r".*"),
]

def main():
    totals = {}
    kernel_total = user_total = 0.0
    for line in open(sys.argv[1]):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*(-\s+-\s*)?$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        kernel = kind == "k"
        if kernel:
            kernel_total += pct
        else:
            user_total += pct
        for name, k, rx in CATS:
            if k == kernel and re.search(rx, sym):
                totals[name] = totals.get(name, 0.0) + pct
                break
    print(f"kernel {kernel_total:.1f}%  user {user_total:.1f}%")
    for name, _, _ in CATS:
        if name in totals:
            print(f"  {totals[name]:5.1f}%  {name}")

if __name__ == "__main__":
    main()
