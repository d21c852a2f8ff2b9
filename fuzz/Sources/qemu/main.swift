import FuzzSupport

FuzzSupport.main(.qemu)
