import FuzzSupport

FuzzSupport.main(.user)
