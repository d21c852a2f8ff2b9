import FuzzSupport

FuzzSupport.main(.firewall)
