import FuzzSupport

FuzzSupport.main(.corosync)
