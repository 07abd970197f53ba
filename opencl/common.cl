// Prepended to every program by KernelLibrary (streamer/restoration/kernels.py).
//
// FOR_EACH_ELEMENT(i, count): the loop of a reducing kernel over count elements, spread over
// all work items. On a GPU (CHUNKED 0) neighbouring work items take neighbouring elements, so
// their reads coalesce. On a CPU (CHUNKED 1) each work item takes one contiguous run: PoCL
// runs one item's loop to the end before the next item's, so a grid stride would touch a new
// cache line on every read (a 2048² change-and-sum pass took 23 ms that way, about 5 in runs).
//
// Defines (KernelLibrary, from the device type): CHUNKED.

#if CHUNKED
#define FOR_EACH_ELEMENT(i, count) \
    for (int i = (int)get_global_id(0) * (((count) + (int)get_global_size(0) - 1) \
                                          / (int)get_global_size(0)), \
             i##_end = min((count), i + (((count) + (int)get_global_size(0) - 1) \
                                         / (int)get_global_size(0))); \
         i < i##_end; ++i)
#else
#define FOR_EACH_ELEMENT(i, count) \
    for (int i = (int)get_global_id(0); i < (count); i += (int)get_global_size(0))
#endif

// The value of a median key (prepare.cl's float_key, or a uint16 value itself), in the
// programs built with KEY_IS_FLOAT (background.cl, detection.cl).
#ifdef KEY_IS_FLOAT
inline float key_to_value(const uint key)
{
#if KEY_IS_FLOAT
    const uint bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    return as_float(bits);
#else
    return (float)key;
#endif
}
#endif
