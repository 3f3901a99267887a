/*
 * stb_image_impl.c - stb_image's implementation compiled from the system
 * header (Debian's libstb-dev, the same version as libstb.so), for the fuzz
 * build only: linked before -lstb, it replaces the library's copy, so the
 * decoders run with sanitizer checks and coverage feedback. The normal build
 * never compiles this file (it uses libstb.so as it is).
 */
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
