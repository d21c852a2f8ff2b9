import FuzzSupport

FuzzSupport.main(.storage)
