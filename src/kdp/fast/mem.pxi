# fast/mem.pxi (included by kdp/_fastpath.pyx): memory for the big tables of the
# compiled conntrack and matcher. Blocks of 2 MiB or more are mmap'ed 2 MiB
# aligned with MADV_HUGEPAGE (random lookups into tens of MB otherwise spend
# their time in page walks); smaller ones come from calloc. Always zeroed.

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <stdint.h>
    #include <stdlib.h>
    typedef struct { void* base; size_t len; } kdp_region;
    #define KDP_HUGE ((size_t)2 << 20)
    static void* kdp_alloc(size_t size, kdp_region* reg) {
        reg->base = NULL; reg->len = 0;
        if (size < KDP_HUGE) return calloc(size ? size : 1, 1);
        size_t len = size + KDP_HUGE;
        void* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        reg->base = p; reg->len = len;
        uintptr_t a = ((uintptr_t)p + KDP_HUGE - 1) & ~(uintptr_t)(KDP_HUGE - 1);
    #ifdef MADV_HUGEPAGE
        madvise((void*)a, size, MADV_HUGEPAGE);
    #endif
        return (void*)a;
    }
    static void kdp_free(void* p, kdp_region* reg) {
        if (reg->len) munmap(reg->base, reg->len); else free(p);
        reg->base = NULL; reg->len = 0;
    }
    """
    ctypedef struct kdp_region:
        void* base
        size_t len
    void* kdp_alloc(size_t size, kdp_region* reg) noexcept nogil
    void kdp_free(void* p, kdp_region* reg) noexcept nogil
