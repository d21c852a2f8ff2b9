import FuzzSupport

FuzzSupport.main(.datacenter)
