// httplib_config.h — include cpp-httplib through this header, never <httplib.h> directly.
//
// Debian ships cpp-httplib split into a header and libcpp-httplib.so, built with OpenSSL, zlib
// and Brotli support (see `pkg-config --cflags cpp-httplib`). Those switches change the
// layout of httplib's classes, so every translation unit must see the same ones as the
// library, or objects are built with the wrong size. Link with `pkg-config --libs cpp-httplib`.
#pragma once

#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_OPENSSL_SUPPORT
#endif
#ifndef CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#endif
#ifndef CPPHTTPLIB_BROTLI_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#endif
#include <httplib.h>
