import FuzzSupport

FuzzSupport.main(.interfaces)
